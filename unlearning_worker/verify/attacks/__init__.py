"""The attacks. Importing this package registers every attack in `verify.registry.ATTACKS`."""

from unlearning_worker.verify.attacks import adaptive, blackbox, quantization, whitebox  # noqa: F401  (registration)
