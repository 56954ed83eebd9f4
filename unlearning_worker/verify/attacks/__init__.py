"""The attacks. Importing this package registers every attack in `verify.registry.ATTACKS`. The
registration order is the order the runner runs them and certificates list them, so the imports below
keep it (white-box first, as adaptive imports it; then candidate rank, relearning, quantization,
black-box)."""
# isort: skip_file

from unlearning_worker.verify.attacks import adaptive  # noqa: F401  (registration)
from unlearning_worker.verify.attacks import quantization  # noqa: F401
from unlearning_worker.verify.attacks import blackbox  # noqa: F401
from unlearning_worker.verify.attacks import whitebox  # noqa: F401
