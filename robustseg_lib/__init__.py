"""robustseg: adversarial robustness of 3D brain-tumour segmentation, reproduced in notebooks.

Modules: data, models, training, attacks, defenses, metrics, stats, viz, artefacts, pipeline.
"""

__version__ = "0.1.0"
