"""PNG files of ours: marked in their text chunk, so a file of the user's is never replaced by a picture."""
from __future__ import annotations

import base64
import html
import os
import tempfile
from pathlib import Path
from typing import Any

from mmrobust.errors import DataError

GENERATOR = "mmrobust"  # the PNG text chunk that marks a picture as ours (a file without it is never replaced)


def save_png(fig: Any, path: str | Path) -> Path:
    """Save ``fig`` as PNG at ``path``, marked as ours; refuses (DataError) to replace a file mmrobust did not
    write (the PNG marker is missing)."""
    path = Path(path)
    if path.exists() or path.is_symlink():
        if not is_ours(path):
            raise DataError(f"{path} exists and is not a picture mmrobust drew; move it away to get this picture")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)  # a fresh name: no clash
    try:
        with os.fdopen(fd, "wb") as f:
            fig.savefig(f, format="png", metadata={"Software": GENERATOR})
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def is_ours(path: str | Path) -> bool:
    """Whether ``path`` is a regular PNG file whose text chunk says mmrobust drew it."""
    from PIL import Image

    p = Path(path)
    if p.is_symlink() or not p.is_file():
        return False
    try:
        with Image.open(p) as im:
            return im.format == "PNG" and str(getattr(im, "text", {}).get("Software", "")) == GENERATOR
    except Exception:  # noqa: BLE001 - anything unreadable is not ours
        return False


def img_html(path: Path) -> str:
    """A PNG file embedded in HTML as a data URI (a report stays one self-contained file)."""
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f'<p><img alt="{html.escape(Path(path).name)}" src="data:image/png;base64,{data}"></p>'
