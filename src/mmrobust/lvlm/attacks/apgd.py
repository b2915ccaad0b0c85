"""``apgd`` (default): untargeted APGD on the mean LM loss of each image's references, one pass
(:func:`mmrobust.lvlm.attack.attack_lvlm_untargeted`; Schlarmann et al. 2024)."""
from mmrobust.lvlm.attack import attack_lvlm_untargeted
from mmrobust.lvlm.attacks import lvlm_attack

lvlm_attack("apgd", protocol="apgd-untargeted-lm-loss")(attack_lvlm_untargeted)
