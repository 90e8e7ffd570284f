"""`import polycap` must stay light: no torch, no transformers (principle 6)."""

import subprocess
import sys


def test_import_polycap_does_not_import_heavy_libraries():
    code = (
        "import sys, polycap; polycap.list_models(); "
        "heavy = [m for m in ('torch', 'transformers', 'tokenizers', 'fastapi') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"heavy modules imported: {out.stdout}"


def test_version_single_source():
    import polycap
    from polycap._version import __version__

    assert polycap.__version__ == __version__
    from importlib.metadata import version

    assert version("polycap") == __version__
