"""robustseg: adversarial robustness of 3D brain-tumour segmentation, reproduced in notebooks.

Modules: data, models, training, attacks, defenses, metrics, stats, viz, artefacts, pipeline.
"""

import os as _os
import sys as _sys

__version__ = "0.1.0"


def _import_jsonschema_without_iri_grammar() -> None:
    """Import ``jsonschema`` once without its optional ``rfc3987_syntax`` IRI format checker.

    MONAI imports ``jsonschema`` (``monai.bundle``) and papermill does through ``nbformat``. With the
    ``jsonschema[format-nongpl]`` extra that Jupyter installs, ``jsonschema._format`` imports ``rfc3987_syntax``,
    which compiles some 35 Earley grammars at import: 7 s of every kernel start on the 2-core CI machine once torch
    is loaded (python-jsonschema/jsonschema#1428; ``benchmarks/bench_import.py``). Nothing in a robustseg process
    validates the ``iri`` format, so it is imported as if that optional package were absent (jsonschema's own
    fallback: the format is then not checked). Does nothing when ``jsonschema`` was imported before robustseg or
    when the environment sets ``ROBUSTSEG_KEEP_IRI_CHECKER=1``; ``rfc3987_syntax`` itself stays importable afterwards.
    """
    if _os.environ.get("ROBUSTSEG_KEEP_IRI_CHECKER") == "1":
        return
    if "jsonschema._format" in _sys.modules or "rfc3987_syntax" in _sys.modules:
        return
    _sys.modules["rfc3987_syntax"] = None  # type: ignore[assignment]  # makes `import rfc3987_syntax` raise ImportError
    try:
        import jsonschema._format  # noqa: F401
    except Exception:  # not installed (or broken, which MONAI's optional import tolerates too): nothing to speed up
        pass
    finally:
        if "rfc3987_syntax" in _sys.modules and _sys.modules["rfc3987_syntax"] is None:
            del _sys.modules["rfc3987_syntax"]


_import_jsonschema_without_iri_grammar()
