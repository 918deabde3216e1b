// The run configuration: a TOML file of sections, every key defaulted here, strictly parsed.
//
// Unknown keys and wrong types are errors that name the file and the key; `--section.key=value`
// overrides from the CLI are type-checked against the same schema. The resolved config is printed
// at start, saved in the run folder, and hashed so that a resumed run can refuse a changed recipe.
//
//   RunConfig cfg = load_run_config("configs/run/quickstart.toml", {"train.max_steps=100"});
#pragma once
#include <cstdint>
#include <string>
#include <variant>
#include <vector>

namespace dsforge {

struct RunConfig {
  struct Run {
    std::string out_dir = "runs/quickstart";  // the run folder: every stage writes here
    int64_t seed = 1337;
    int64_t threads = 0;  // intra-op threads; 0 = all cores
    std::string device = "cpu";  // "cpu", "cuda", "cuda:N", or "auto" (CUDA when the build and machine have it)
  } run;
  struct Data {
    std::string source = "wordnet";  // "wordnet" (Debian wordnet-base glosses) or "files"
    std::string wordnet_dir = "/usr/share/wordnet";
    std::vector<std::string> paths;   // files, folders or globs (source = "files"): *.jsonl / *.ndjson
                                      // one JSON object per line; any other file is text, cut per txt_documents
    std::string txt_documents = "line";  // text files: "line" (one document per line), "paragraph"
                                         // (blank-line separated) or "file" (the whole file: source trees)
    std::vector<std::string> val_paths;   // the user's own validation files (same forms as paths): used as
                                          // the validation split, no hash split; all of paths trains
    std::vector<std::string> test_paths;  // the user's own test files -> data/test.jsonl and a test shard
    std::string jsonl_field = "text"; // the text field of JSONL records
    bool normalize = true;            // false: documents byte for byte (only invalid UTF-8 is handled)
    bool collapse_whitespace = false; // true: every whitespace run, newlines included, becomes one space
                                      // (one-line documents); false keeps lines, tabs and indentation
    std::string invalid_utf8 = "repair";  // "repair" (U+FFFD) or "drop" the document
    double val_fraction = 0.02;       // share of documents held out, chosen by a hash of the text
    int64_t max_docs = 0;             // 0 = all
    int64_t min_chars = 4;            // shorter documents are dropped
    int64_t max_chars = 4000;         // longer documents are dropped
    double max_ngram_repetition = 0.5;       // drop documents where this share of word 3-grams are repeats
    double max_repeated_line_fraction = 0.5; // drop documents where this share of lines are repeats
    bool near_dedup = true;                  // MinHash + LSH near-duplicate removal
    double near_dedup_threshold = 0.8;       // estimated Jaccard similarity of shingle sets
    std::string shingle = "char";            // "char" or "word" n-grams
    int64_t shingle_size = 5;
    int64_t minhash_perm = 128;
    int64_t minhash_bands = 16;
    int64_t min_word_count = 0;              // > 0: words rarer than this in train become unk_token
    std::string unk_token = "<unk>";
  } data;
  struct Augment {
    bool enabled = false;       // add augmented copies of the training split (never of validation)
    int64_t copies = 1;         // EDA copies per training document (0 = none: counterfactual or back-translated copies only)
    double synonym_prob = 0.1;  // EDA operations (Wei & Zou 2019), WordNet synonyms
    double insert_prob = 0.1;
    double swap_prob = 0.1;
    double delete_prob = 0.1;
    // Counterfactual data augmentation (Lu et al. 2018): a word-pair list (data/fairness/gender_pairs.txt's
    // format); each document mentioning a listed term gets one more copy with every term swapped.
    std::string cda_pairs;
    // Back-translation paraphrases: two model folders of `finetune --task parallel --out DIR` (DIR/model),
    // [to the pivot language, back from it]; each line of a training document takes the round trip,
    // sampled at bt_temperature (0 = greedy), bt_copies times. A paraphrase equal to its document or with
    // an empty line is dropped (counted). Empty = off.
    std::vector<std::string> bt_models;
    int64_t bt_copies = 1;
    double bt_temperature = 0.7;
  } augment;
  struct Tokenizer {
    int64_t vocab_size = 0;  // 0 = the model's vocab_size
    std::vector<std::string> special_tokens{"<|endoftext|>"};
    int64_t max_train_docs = 0;  // 0 = all training documents
    std::string pretokenizer = "gpt2";  // or "deepseek-v3": digit groups of 1-3, CJK runs isolated
  } tokenizer;
  struct Model {
    std::string config = "nano";  // a preset (nano, micro, mini, gpt2-tiny, ...) or an HF-style config.json
  } model;
  struct Train {
    int64_t seq_len = 128;
    int64_t batch_size = 16;
    int64_t max_steps = 600;
    int64_t grad_accum_steps = 1;  // micro-batches of batch_size per optimizer step
    double lr = 3e-3;            // peak learning rate
    std::string schedule = "cosine";  // constant, cosine, wsd (warmup-stable-decay), deepseek (V3's step schedule)
    double min_lr_ratio = 0.1;   // cosine / wsd floor as a fraction of lr
    double decay_fraction = 0.2; // wsd: the final share of steps that decays
    int64_t warmup_steps = 30;
    double weight_decay = 0.1;
    double beta1 = 0.9;
    double beta2 = 0.95;
    double eps = 1e-8;
    double grad_clip = 1.0;      // global norm; 0 disables
    double init_std = 0.02;
    // A word-vector file (dsforge embed's, word2vec text or binary): on a fresh start, the embedding row of
    // every token that is a whole word the file knows starts from its vector, scaled to the init norm.
    std::string init_embeddings;
    double label_smoothing = 0.0;
    int64_t early_stopping_patience = 0;  // evaluations without improvement before stopping; 0 = off
    double early_stopping_min_delta = 0.0;  // improvement of val loss that counts
    double bias_update_speed = 1e-3;  // gamma of the aux-loss-free expert bias
    double aux_loss_alpha = 1e-4;     // sequence-wise balance loss weight
    double mtp_loss_weight = 0.3;     // lambda
    int64_t log_every = 20;
    int64_t eval_every = 200;
    int64_t checkpoint_every = 100;
    int64_t keep_checkpoints = 2;
    double dropout = 0.0;             // on each sublayer output before the residual add
    double attention_dropout = 0.0;   // on the attention probabilities
    double embedding_dropout = 0.0;   // on the token (+ position) embeddings
    std::string precision = "fp32";   // fp32, bf16 (autocast, float32 master weights), fp16 (CUDA, loss scaling)
    bool fit_micro_batch = true;      // pick the largest micro-batch that fits memory_gb (same global batch)
    double memory_gb = 0.0;           // budget for picking the micro-batch; 0 = 60% of available memory
    double spike_factor = 0.0;        // roll back when loss > factor x its running mean; 0 = off
    int64_t max_rollbacks = 3;        // spike rollbacks before the run stops with an error
    double peak_gflops = 0.0;         // matmul peak for MFU; 0 = measure it at start
  } train;
  struct Dist {  // data-parallel training (launched by `dsforge launch`, torchrun, Slurm or mpirun)
    double bucket_mb = 25.0;   // gradient all-reduce bucket size
    bool zero1 = false;        // shard the optimizer state across ranks (ZeRO stage 1)
    double timeout_s = 120.0;  // a collective waiting longer than this fails, naming the lost rank
  } dist;
  struct Eval {
    int64_t batches = 40;  // validation batches for loss/perplexity (0 = the whole split)
  } eval;
  struct Generate {
    std::vector<std::string> prompts{"dog:", "computer:", "happy:", "river:", "mathematics:"};
    int64_t max_new_tokens = 40;
    double temperature = 0.7;
    int64_t top_k = 20;
    double top_p = 1.0;               // nucleus sampling; 1 = off
    double repetition_penalty = 1.0;  // > 1 discourages repeats; 1 = off
    std::vector<std::string> stop{};  // extra stop strings, each one token (end-of-text always stops)
    std::string weights = "f32";      // "bf16": decode reads bfloat16 copies of the linear weights (DeepSeek-V3)
  } generate;
  struct Continual {  // `dsforge continue`: training a trained model on new data (continual/)
    std::string strategy = "finetune";  // finetune, ewc, online-ewc, l2sp, replay, lwf, or '+'-joined (replay+ewc)
    double ewc_lambda = 1000.0;         // EWC / online EWC: penalty lambda/2 * sum F (theta - theta*)^2
    std::string fisher = "empirical";   // "empirical" (gradients at the data's next tokens) or "sampled" (from the model)
    int64_t fisher_samples = 64;        // old-domain windows the diagonal Fisher averages over
    int64_t ewc_max_terms = 0;          // EWC: per-domain terms a model keeps, the newest N (0 = all); bounds the
                                        // folder over many stages (--watch rounds); online EWC keeps one term anyway
    double online_gamma = 0.9;          // online EWC: F <- gamma * F_old + F_new (Schwarz et al. 2018)
    double l2sp_alpha = 0.01;           // L2-SP: alpha/2 * ||theta - theta_0||^2
    double replay_ratio = 0.25;         // replay: share of each batch's rows drawn from the reservoir
    int64_t replay_capacity = 2048;     // replay: windows the reservoir keeps
    double lwf_alpha = 0.5;             // LwF: weight of the distillation term
    double lwf_temperature = 2.0;       // LwF: softmax temperature of teacher and student
  } continual;

  std::string source_path;  // the TOML file this came from ("" for defaults)
};

// Parses `path` (must exist) and applies `overrides` ("section.key=value"). Relative input paths in the
// file (model.config, data.paths, data.wordnet_dir) resolve against the file's folder; run.out_dir and
// the overrides stay relative to the working directory.
RunConfig load_run_config(const std::string& path, const std::vector<std::string>& overrides = {});
// A run folder's saved config.toml, read as written (its paths are already resolved).
RunConfig load_saved_run_config(const std::string& path);
// Applies one "section.key=value" override; throws ConfigError naming the key.
void apply_override(RunConfig& cfg, const std::string& assignment);
// Range checks; throws ConfigError naming the key.
void validate(const RunConfig& cfg);
// Canonical TOML of every resolved value.
std::string to_toml(const RunConfig& cfg);
// "key (a -> b)" for every key whose value differs between `a` and `b`, in schema order.
std::vector<std::string> differing_keys(const RunConfig& a, const RunConfig& b);
// Whether model.config names a built-in preset ("nano", "gpt2-tiny") rather than a file.
bool is_model_preset_name(const std::string& value);
// Hash of the fields that define what a checkpoint means (data, tokenizer, model, seq_len, seed).
std::string checkpoint_hash(const RunConfig& cfg);
// Hash of every key of one section plus the seed: what a stage's outputs depend on (data, augment).
std::string section_hash(const RunConfig& cfg, const std::string& section);

}  // namespace dsforge
