"""mmrobust: security and robustness of vision-language models.

Backdoors (poisoning, CleanCLIP, PAR), adversarial robustness (PGD/APGD, FARE, TeCoA) and
leading-question benchmarks (MMR), on real open_clip / Hugging Face models or an embedded
synthetic world that runs offline on a laptop CPU.
"""
from mmrobust.errors import ConfigError, DataError, MMRobustError, TrainingError

__version__ = "0.1.0"
__all__ = ["ConfigError", "DataError", "MMRobustError", "TrainingError", "__version__"]
