"""Screenshots for the README, from the example notebooks as saved: JupyterLab (in
Debian's headless Chromium, as the browser tests drive it) opens a notebook and the
output of one cell is captured.

    python docs/screenshot.py notebooks/recovery.ipynb 8 docs/recovery.png
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.lab import Lab, Notebook, open_browser  # noqa: E402


def main(notebook: str, cell: int, out: str) -> None:
    tmp = Path(tempfile.mkdtemp())
    with Lab(tmp, {}) as lab:
        lab.start()
        name = Path(notebook).name
        shutil.copy(ROOT / notebook, lab.root / name)
        with open_browser(tmp) as browser:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            nb = Notebook(page, lab, name).open()
            nb.hide_sidebar()
            target = nb.cell(cell)
            target.scroll_into_view_if_needed()
            target.screenshot(path=str(ROOT / out))
    print(f"wrote {out}")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3])
