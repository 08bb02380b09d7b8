"""Task-agnostic fingerprints for ReLU networks, after TAFA (Pan, Zhang, Lu, Yang, ESORICS 2021,
``../shared/papers/002_*``). **A reconstruction**: the seed holds only the paper's abstract, notes, references and
appendix, and no code is public. What the seed says: the fingerprint works for any ReLU network, whatever its task
(classification, regression, generation), without training data, and its references point at linear regions
(Rolnick & Kording on reverse-engineering ReLU networks, Hanin & Rolnick and Serra et al. on linear regions, an LP
solver). What is chosen here is said where it is implemented: :mod:`.probe` (reading every hidden ReLU) and
:mod:`.boundary` (points on the faces of the target's linear regions) and :mod:`ipguard_tf.core.tafa_statistics`
(how a suspect is compared: the default, the output correlation, was chosen among five statistics in-sample and
tested on fresh models; it separates as well at random inputs as at the boundary points, see
``experiments/results/tafa_fashion_mnist*/NOTES.md``).
"""

from ipguard_tf.methods.tafa.method import TAFA, suspect_outputs, verify_all, verify_statistic, with_slopes

__all__ = ["TAFA", "suspect_outputs", "verify_all", "verify_statistic", "with_slopes"]
