// Population-based training (Jaderberg et al. 2017, "Population Based Training of Neural Networks"): a
// population of trainings runs side by side in generations of `interval` steps. After each generation
// the members are ranked by their validation loss; each member in the bottom `exploit_fraction` copies
// the weights and optimizer state of a member drawn from the top fraction (exploit: its next segment
// starts from that member's checkpoint) and perturbs the hyperparameters it inherits (explore: each
// number multiplied by 1 - perturb or 1 + perturb, clipped to its range and step; each categorical
// choice redrawn with resample_probability). The rest keep their own weights and hyperparameters.
// "Truncation selection" and "perturb" in the paper's terms.
//
// In a study a generation is P trials: trial g * P + m is member m's segment g, with the hyperparameters
// it trained with, its validation losses and its final one; the lineage (member, generation, the trial
// whose checkpoint it started from) is stored beside it, so an interrupted search resumes where it stopped
// and the report draws each member's hyperparameter schedule.
//
// Free of libtorch.
#pragma once
#include <cstdint>
#include <vector>

#include "dsforge/core/splitmix.h"
#include "dsforge/search/sampler.h"

namespace dsforge::search {

struct PbtOptions {
  int64_t population = 8;
  int64_t interval = 0;            // steps per generation (0 = train.eval_every)
  double exploit_fraction = 0.25;  // bottom and top share (at least one member each)
  double perturb = 0.2;            // numbers x (1 - perturb) or x (1 + perturb)
  double resample_probability = 0.25;  // a categorical choice redrawn
  uint64_t seed = 0;
};

// One member's next segment: its hyperparameters and the trial whose checkpoint it starts from (-1: a
// fresh start, generation 0).
struct PbtSegment {
  int64_t member = 0, generation = 0, source = -1;
  Params params;
  bool exploited = false;  // copied a better member
};

// Generation 0: independent draws from the space (the random sampler), seeded by (seed, member).
std::vector<PbtSegment> pbt_first_generation(const SearchSpace& space, const PbtOptions& o);
// Generation g from generation g - 1's trials (member order; a FAIL trial or a non-finite loss ranks
// last); the draws (SplitMix64, the same on every standard library) are seeded by (seed, g), so a
// resumed search decides the same.
std::vector<PbtSegment> pbt_next_generation(const SearchSpace& space, const std::vector<TrialRecord>& previous, int64_t generation,
                                            const PbtOptions& o);
// The explore step alone.
Params pbt_perturb(const SearchSpace& space, const Params& p, const PbtOptions& o, SplitMix64& rng);
// ConfigError naming the option for impossible settings.
void validate(const PbtOptions& o);

}  // namespace dsforge::search
