"""Paper defaults, defined once.

Every number here comes from Cao, Jia, Gong, "IPGuard: Protecting Intellectual Property of Deep Neural
Networks via Fingerprinting the Classification Boundary", AsiaCCS 2021 (``../shared/papers/001_*.txt``),
unless its comment says otherwise. The CLI, the experiments and the tests import them from here.
"""

from __future__ import annotations

#: Number of fingerprinting data points (Section 5.1.4: "we set n = 100").
N_POINTS: int = 100

#: Maximum number of Adam iterations per point (Section 5.1.3: "We set the maximum number of iterations
#: to be 1,000"); also IGSM's iteration cap.
MAX_ITERATIONS: int = 1000

#: Adam learning rate for CIFAR-size (28x28 / 32x32) inputs (Section 5.1.3, shared with CW-L2).
LEARNING_RATE_SMALL: float = 0.001

#: Adam learning rate for ImageNet-size inputs (Section 5.1.3).
LEARNING_RATE_IMAGENET: float = 0.1

#: Inputs with more pixels than this per channel (side > 64) count as "ImageNet size" when the learning
#: rate is chosen automatically. The paper only gives the two datasets' values; 64 is our cut-off.
IMAGENET_SIZE_MIN_SIDE: int = 64

#: Adam's moment decay rates and epsilon. The paper does not state them; these are Kingma & Ba's
#: defaults, which are also TensorFlow 1's ``tf.train.AdamOptimizer`` defaults used by Carlini & Wagner's
#: reference CW-L2 implementation that the paper says it ran.
ADAM_BETA1: float = 0.9
ADAM_BETA2: float = 0.999
ADAM_EPSILON: float = 1e-8

#: Number of threshold intervals for the ARUC approximation (Eq. 7: "we set r = 100").
ARUC_INTERVALS: int = 100

#: Data domain of the fingerprinting points: images in [0, 1]^d (Section 5.1.4).
DATA_MIN: float = 0.0
DATA_MAX: float = 1.0

#: Initialisation strategies (Section 5.1.4, Table 3): T = random training example, R = uniform in [0,1]^d.
INIT_STRATEGIES = ("T", "R")

#: Target-label strategies (Section 5.1.4, Table 3): R = random label (never i), L = least-likely label.
LABEL_STRATEGIES = ("R", "L")

#: The paper's best strategy (Section 5.2 / Table 4 use -TL for IPGuard).
DEFAULT_INIT: str = "T"
DEFAULT_LABEL: str = "L"

#: IGSM step size alpha = 1/255, "the minimal step size" for images (Section 5.1.3).
IGSM_ALPHA: float = 1.0 / 255.0

#: Default FGSM/IGSM L-infinity bound. The paper sweeps epsilon (Figures 3-4) without naming one default;
#: 0.1 lies in the range it sweeps for 8-bit images.
DEFAULT_EPSILON: float = 0.1

#: WP sparsity step and FP filter-fraction step (Section 5.1.2), and the accuracy-loss cap of 3 %.
WP_STEP: float = 0.1
FP_STEP: float = 1.0 / 16.0
MAX_ACCURACY_LOSS: float = 0.03

#: The SAC zoo's utility floor (issue 31): a stolen model (every attack family) whose test accuracy is more than
#: 10 points below the source's is no copy a thief would deploy, and is recorded as rejected instead of counted.
#: SAC states no floor; its stolen models stay within a few points of the source. Chosen before the rebuild.
STOLEN_MAX_ACCURACY_DROP: float = 0.10

#: CW-L2 binary search (Carlini & Wagner reference implementation defaults, l2_attack.py).
CW_BINARY_SEARCH_STEPS: int = 9
CW_INITIAL_CONST: float = 1e-3

#: Default matching-rate threshold of Verify. The paper leaves the threshold to the model owner and
#: reports ARUC over all thresholds instead; 0.5 is the midpoint of the range in which the paper's
#: IPGuard separates positives from negatives on all three datasets (Tables 5-7: positives >= 0.90,
#: negatives <= 0.09), and it is what a careful user would pick without a calibration set.
DEFAULT_THRESHOLD: float = 0.5
#: epochs of each negative ``ipguard fingerprint --negatives N`` trains on the owner's data (issue 30; our choice, the
#: paper trains its negatives with each architecture's own recipe and an owner's architecture has none we know)
NEGATIVE_EPOCHS: int = 5
#: false-positive rate ``ipguard calibrate`` sets its threshold at, unless told (issue 16; a choice: 1 %)
CALIBRATION_FPR: float = 0.01

#: Default k for IPGuard on the small Fashion-MNIST target of this project (see README, "Choice of k").
#: The paper's k grid is for CIFAR/ImageNet logit scales; k must be chosen on the target's own scale.
DEFAULT_K: float = 1.0

# -- SAC (Guan, Liang, He, NeurIPS 2022; ../shared/papers/003_*, official code github guanjiyang/SAC) -----------
#: SAC-m's number of CutMix samples (the official ``cut_mix.py`` mixes one batch of 100 images).
SAC_N_SAMPLES: int = 100

#: CutMix patch side as a fraction of the image side (``cut_mix.py``: ``cut_rat = 0.2``).
SAC_PATCH: float = 0.2

#: CutMix patch centres lie outside the middle band (W/6, 5W/6) in both coordinates, i.e. in a corner zone
#: (``cut_mix.py``'s ``rand_bbox`` redraws while the centre is inside the band in either coordinate).
SAC_CENTRE_BAND: tuple = (1.0 / 6.0, 5.0 / 6.0)

# -- AKH (Godinot, Le Merrer, Penzo, Taiani, Tredan, "Queries, Representation & Detection: The Next 100 Model
# Fingerprinting Schemes", AAAI 2025, arXiv 2412.13021; official code github grodino/QuRD, ``qurd/fingerprint/``) --
#: QuRD's AKH does not refuse a model that misclassifies too few inputs: it fills the budget with CutMix copies of
#: them and their horizontal and vertical flips (``queries.py``, ``RandomNegativeQueries(augment=True)``). Off here
#: by default (our choice): the fingerprint is then only the model's own misclassified inputs, and too few is an
#: error; ``augment=True`` (``--akh-augment``) does what QuRD does.
AKH_AUGMENT: bool = False

#: alpha of the Beta(alpha, alpha) draw of that CutMix's mixing ratio (QuRD: ``v2.CutMix(alpha=1.0)``).
AKH_CUTMIX_ALPHA: float = 1.0

#: the copies each CutMix round adds: the mixed images, flipped left-right and flipped upside down (QuRD).
AKH_COPIES_PER_ROUND: int = 3

# -- CAE (Lukas, Zhang, Kerschbaum, "Deep Neural Network Fingerprinting by Conferrable Adversarial Examples",
# ICLR 2021). The paper's own hyperparameter table could not be read here (no internet); every value below is
# taken from a named public implementation and the source is written beside it:
#   [R] github RorschachChen/conferrable_adversarial_examples_pytorch, stage1_prepare_fingerprint_example_V2.py
#   [K] the Keras CEM script of the same work (cem_exp.py lineage: model dropout, Adam via apply_gradients,
#       per-step L-inf clipping), as found in public code
#: L-infinity bound of a CAE perturbation on [0, 1] inputs ([R]: ``epsilon = [0.15]``).
CAE_EPSILON: float = 0.15

#: Loss weights of alpha H(1, max_t E(x')_t) - beta H(M(x0), M(x')) + gamma H(M(x'), S(x')) ([R]: 1, 1, 1).
CAE_ALPHA: float = 1.0
CAE_BETA: float = 1.0
CAE_GAMMA: float = 1.0

#: Optimisation steps per example ([R] and [K]: ``while i < 100``).
CAE_MAX_ITER: int = 100

#: Dropout of the ensemble: each step, each surrogate and reference model is left out with this probability
#: ([R] and [K]: ``np.random.binomial(1, 0.7, ...)`` keeps a model with probability 0.7).
CAE_DROPOUT: float = 0.3

#: Conferrability threshold: an example is kept when its ensemble conferrability score is at least this
#: ([R]: ``threshold = 0.85``).
CAE_TAU: float = 0.85

#: Adam step of the CAE search. [K] uses Adam with a schedule whose values it keeps in a file not found here,
#: [R] signed steps; 0.01 on [0, 1] inputs lets a coordinate cross the 0.15 ball in 15 steps of the 100. Our
#: choice, made before any measurement.
CAE_LEARNING_RATE: float = 0.01

#: Owner examples searched per fingerprint point at most: the search stops once n examples pass the filter or
#: ``CAE_MAX_CANDIDATES_PER_POINT * n`` have been searched. Our choice (the paper's pass rate is not known here).
CAE_MAX_CANDIDATES_PER_POINT: int = 10

#: Default verdict threshold of the SAC distance (lower = copy). SAC states none (it reports AUCs); 0.05 is a
#: small fraction of the statistic's [0, 1] range, chosen before any measurement; calibrate instead (issue 16).
SAC_DEFAULT_THRESHOLD: float = 0.05

# -- Anti-piracy transform (Chen & Wu 2018, ../shared/papers/004_*; the slides give the loss and the transforms'
# form but no values: every number here is this implementation's choice, made before any run) ------------------

#: The transforms of the slides, simplest first.
ANTIPIRACY_TRANSFORMS = ("fixed", "learned", "generator")

#: The bipolar perturbation (Fixed, and the Learned perturbation's start): each pixel -sigma, 0, +sigma with
#: probabilities p, 1 - 2p, p. sigma = 0.1 of the [0, 1] range and p = 0.1 (20 % of the pixels move; mean squared
#: distortion 2 p sigma^2 = 0.002, PSNR 27 dB before clipping): visible on close inspection, every garment still
#: recognisable (as in the slides' visualisation of processed inputs).
ANTIPIRACY_SIGMA: float = 0.1
ANTIPIRACY_P: float = 0.1

#: Feature maps of the Generator's 5x5 layer (the slides: "a convolutional layer (5-by-5), cascaded by a
#: bottleneck layer (1-by-1)", no width).
ANTIPIRACY_GENERATOR_FILTERS: int = 16

#: Loss weights of E = alpha E_p + beta E_r + gamma ||x_p - x_r||^2 (see ipguard_tf.protect.training).
ANTIPIRACY_ALPHA: float = 1.0
ANTIPIRACY_BETA: float = 1.0
ANTIPIRACY_GAMMA: float = 0.01

#: Epochs per architecture (the project's Fashion-MNIST recipes: Adam 1e-3, batch 128).
ANTIPIRACY_EPOCHS = {"simple_cnn": 8, "resnet20": 10}

#: Threats: input-only trials (the issue asks for at least 10), pair-attack trials per fraction, the fractions
#: (the slides'), and the epochs the pair attacker trains its module for.
ANTIPIRACY_INPUT_ONLY_TRIALS: int = 10
ANTIPIRACY_PAIR_TRIALS: int = 5
ANTIPIRACY_PAIR_FRACTIONS = (0.1, 0.5, 1.0)
ANTIPIRACY_PAIR_EPOCHS: int = 10

# -- TAFA, reconstructed (Pan et al. 2021, ../shared/papers/002_*: abstract, notes, references and appendix only;
# every value here is this implementation's choice, made before any measurement) -------------------------------

#: the tasks a TAFA fingerprint covers (the seed's three scenarios)
TAFA_TASKS = ("classifier", "regressor", "generator")
#: longest walk from a start to a boundary, in input units (images in [0, 1]; a generator's N(0, 1) latents)
TAFA_REACH: float = 1.0
#: bisection steps, the re-check's tolerance (input units from the neuron's hyperplane), tries per start
TAFA_BISECTION_STEPS: int = 30
TAFA_TOLERANCE: float = 1e-4
TAFA_MAX_TRIES: int = 5
#: half-width of the segment along the normal on which the second difference is taken (a hundredth of the [0, 1]
#: range: small next to the walks, large next to the re-check's tolerance)
TAFA_EPSILON: float = 1e-2
#: default verdict threshold of the bend rate: a model sharing nothing with the target bends more at a point
#: than at its control half the time, so its rate is binomial(n, 1/2) at most; 0.62 is that null's one-sided 1 %
#: point at n = 100 (P(X >= 62) = 0.0105). Calibrate on negatives instead where there are some (issue 16).
TAFA_DEFAULT_THRESHOLD: float = 0.62
#: the statistics a TAFA fingerprint may be verified by (ipguard_tf.core.tafa_statistics), the default first. The
#: output correlation became the default after the first experiment (session 10): of five statistics measured
#: on the same suspects (experiments/results/tafa_fashion_mnist) it alone separated copies from independent
#: models on two tasks of three (AUC 1.00, 0.99, 1.00); a choice made in-sample, so it was then checked on
#: fresh models (experiments/results/tafa_fashion_mnist_heldout). The bend rate stays available (and verifies
#: the files made with it).
TAFA_STATISTICS = ("output_correlation", "bend_rate")
#: default verdict threshold of the output correlation, read off that first experiment before the held-out run:
#: above every independent model there (highest 0.54), below every regressor and generator copy (lowest 0.75)
#: and 19 of 24 classifier copies. Calibrate on your own negatives where you have some.
TAFA_CORRELATION_THRESHOLD: float = 0.6
