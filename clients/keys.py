"""Record keys shared by the ClientApp and the server side (one owner per name)."""

ARRAYS = "arrays"  # ArrayRecord with the model weights (Flower strategies' default key)
CONFIG = "config"  # ConfigRecord sent by the strategy
METRICS = "metrics"  # MetricRecord in every reply

NUM_EXAMPLES = "num-examples"  # weighting key the Flower strategies expect
SERVER_ROUND = "server-round"
PROXIMAL_MU = "proximal-mu"  # sent by Flower's FedProx

PARTITION_ID = "partition-id"
TRAIN_LOSS = "train-loss"
EVAL_LOSS = "eval-loss"
EVAL_ACC = "eval-acc"
ROBUST_ACC = "robust-acc"
FAIR_COUNTS = "fair-counts"  # flattened int counts indexed [z, y, y_hat]
NUM_GROUPS = "num-groups"
NUM_CLASSES = "num-classes"

# Keys that describe one client and must not be averaged across clients.
PER_CLIENT = frozenset({PARTITION_ID, FAIR_COUNTS, NUM_GROUPS, NUM_CLASSES})
