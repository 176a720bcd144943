"""mlxft's terminal UI: Textual screens over the engine's API and over run directories.

Nothing under `mlxft/` imports this package; `mlxft tui` is the one door in.
"""

from __future__ import annotations


def run_app(*, runs_dir: str = "runs", start: str = "models") -> int:
    from tui.app import MlxftApp

    app = MlxftApp(runs_dir=runs_dir, start=start)
    app.run()
    return app.return_code or 0
