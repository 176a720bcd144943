"""`mlxft push`: a run exported in a format, with its model card and loss curve, uploaded to a Hugging Face Hub repo.

The folder that goes up is written first, atomically, like any export (default RUN/exports/hub-<format>); `--dry-run`
stops there, so what it leaves is exactly what a push uploads. The upload is huggingface_hub 2.x's `create_repo(exist_ok=True)`
and `upload_folder` (2.x has no `upload_large_folder`), without the export's own stamp. The token is huggingface_hub's
own lookup (HF_TOKEN, else what `hf auth login` saved): mlxft never reads it into a message, a log or a file.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from mlxft.atomic import atomic_write_text, publish_dir, temp_dir_for
from mlxft.errors import MlxftError, RunError, write_error
from mlxft.export import EXPORT_STAMP, EXPORTS_DIR, ExportOptions, _refuse_foreign, export_run
from mlxft.runs import RunDir


class HubError(MlxftError):
    """The Hub refused a push, or cannot be reached: says which, and what to do."""


@dataclass
class PushResult:
    repo: str
    folder: Path                 # what was (or, on a dry run, would be) uploaded
    files: list[str]             # relative to folder, without the export stamp
    notes: list[str] = field(default_factory=list)
    url: str | None = None       # the repo on the Hub (None on a dry run)
    commit_url: str | None = None
    dry_run: bool = False


def check_repo_id(repo: str) -> str:
    """`owner/name` as the Hub allows it, else a HubError saying what is wrong."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    repo = (repo or "").strip()
    hint = "a repo id is OWNER/NAME, e.g. --repo your-name/smollm2-support-lora (letters, digits, '-', '_', '.')"
    if repo.count("/") != 1:
        raise HubError(f"--repo {repo!r}: not OWNER/NAME", hint=hint)
    try:
        validate_repo_id(repo)
    except HFValidationError as exc:
        reason = str(exc).splitlines()[0]
        raise HubError(f"--repo {repo!r}: not a valid Hub repo id ({reason})", hint=hint) from None
    return repo


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _offline_error() -> HubError:
    return HubError("HF_HUB_OFFLINE is set: huggingface_hub will not reach the Hub, so nothing can be pushed",
                    hint="unset HF_HUB_OFFLINE to push, or use --dry-run to write the folder that would go up")


def require_token() -> None:
    """Fail early, before any export is written, when huggingface_hub has no token to push with."""
    from huggingface_hub import get_token

    try:
        found = get_token()
    except Exception as exc:  # an OIDC exchange that failed, an unreadable token file: say so without quoting any token
        raise HubError(f"cannot read a Hugging Face token ({type(exc).__name__})", hint="set HF_TOKEN, or run `hf auth login`") from None
    if not found:
        raise HubError("no Hugging Face token: pushing needs one with write access",
                       hint="run `hf auth login` (or set HF_TOKEN to a write token from https://huggingface.co/settings/tokens)")


def check_access(repo: str) -> None:
    """Before any export is written: the Hub answers, takes the token, and the token is not read-only (whoami)."""
    from huggingface_hub import HfApi

    try:
        me = HfApi().whoami()
    except Exception as exc:
        raise hub_error(exc, repo, "check the token") or exc from None
    role = ((me.get("auth") or {}).get("accessToken") or {}).get("role") if isinstance(me, dict) else None
    if role == "read":
        raise HubError(f"the token is read-only: it cannot create or write {repo}",
                       hint="make a write token (https://huggingface.co/settings/tokens) and `hf auth login` with it, or set HF_TOKEN")


def hub_error(exc: BaseException, repo: str, doing: str) -> MlxftError | None:
    """A HubError for a failure of the Hub client (refused, not found, unreachable), or None when it is none of those."""
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled, RepositoryNotFoundError

    if isinstance(exc, OfflineModeIsEnabled):
        return _offline_error()
    if isinstance(exc, HfHubHTTPError) and getattr(exc, "response", None) is not None:
        status = exc.response.status_code
        said = f": {exc.server_message.strip()}" if getattr(exc, "server_message", None) else ""
        if status == 401:
            return HubError(f"the Hub refused the token while trying to {doing} (401 Unauthorized{said})",
                            hint="the token is invalid or expired: run `hf auth login` again, or set HF_TOKEN to a current one")
        if status == 403:
            return HubError(f"the token cannot write to {repo} (403 Forbidden{said})",
                            hint=f"use a token with write access to {repo.split('/')[0]} (https://huggingface.co/settings/tokens), or push to your own namespace")
        if isinstance(exc, RepositoryNotFoundError) or status == 404:
            return HubError(f"{repo}: the Hub has no such repo, or hides it from this token (404 while trying to {doing}{said})",
                            hint=f"check that {repo.split('/')[0]} is your user or an organisation you can write to")
        return HubError(f"the Hub answered {status} while trying to {doing} {repo}{said}", hint="try again later; https://status.huggingface.co")
    if _is_connection_error(exc):
        return HubError(f"cannot reach the Hugging Face Hub to {doing} ({type(exc).__name__})",
                        hint="check the network (and HF_ENDPOINT, proxies); --dry-run writes the folder without the network")
    return None


def _is_connection_error(exc: BaseException) -> bool:
    try:
        import httpx2

        if isinstance(exc, httpx2.TransportError):
            return True
    except ImportError:
        pass
    return isinstance(exc, (ConnectionError, TimeoutError))


def default_push_folder(run: RunDir, fmt: str) -> Path:
    return run.path / EXPORTS_DIR / f"hub-{fmt}"


def stage_push(run: RunDir, fmt: str, repo: str, out: Path | None, options: ExportOptions) -> tuple[Path, list[str], list[str]]:
    """Write the folder a push uploads (the export, README.md, loss_curve.png) atomically at `out`; (folder, files, notes)."""
    from mlxft.export.card import card_recipe, write_card

    out = Path(out) if out is not None else default_push_folder(run, fmt)
    _refuse_foreign(out, run)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        work = temp_dir_for(out)
    except OSError as exc:
        raise write_error(exc, out, "create the push folder") from None
    try:
        result = export_run(run.path, fmt, out=work / "export", options=options)
        stage = result.folder
        recipe = run.load_recipe()
        notes = list(result.notes) + write_card(run, recipe, stage, fmt, repo, base_override=options.base, export_notes=result.notes)
        if (stage / run.recipe_path.name).is_file():  # the copy that goes public: no tracking server, no home folder
            atomic_write_text(stage / run.recipe_path.name, card_recipe(recipe))
        stamp = json.loads((stage / EXPORT_STAMP).read_text(encoding="utf-8"))
        atomic_write_text(stage / EXPORT_STAMP, json.dumps({**stamp, "hub_repo": repo, "notes": notes}, indent=2))
        files = sorted(str(p.relative_to(stage)) for p in stage.rglob("*") if p.is_file() and p.name != EXPORT_STAMP)
        publish_dir(stage, out)
    except OSError as exc:
        raise write_error(exc, getattr(exc, "filename", None) or out, "write the push folder") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out, files, notes


def upload(folder: Path, repo: str, *, private: bool, message: str) -> tuple[str, str | None]:
    """create_repo(exist_ok=True) + upload_folder, leaving out the export stamp; (repo url, commit url)."""
    from huggingface_hub import HfApi

    api = HfApi()
    try:
        url = api.create_repo(repo, repo_type="model", private=True if private else None, exist_ok=True)
    except Exception as exc:
        raise hub_error(exc, repo, "create the repo") or exc from None
    try:
        info = api.upload_folder(repo_id=repo, repo_type="model", folder_path=str(folder), ignore_patterns=[EXPORT_STAMP], commit_message=message)
    except Exception as exc:
        raise hub_error(exc, repo, "upload the files") or exc from None
    return str(url), getattr(info, "commit_url", None)


def push_run(run_path: str | Path, repo: str, *, fmt: str = "mlx", out: str | Path | None = None, private: bool = False,
             dry_run: bool = False, options: ExportOptions | None = None) -> PushResult:
    """Export the run at `run_path` as `fmt` with a model card into `out`, and (unless `dry_run`) upload it to `repo`."""
    repo = check_repo_id(repo)
    run = RunDir.containing(run_path)
    if run is None:
        raise RunError(f"{run_path}: not an mlxft run directory (no recipe.yaml and metrics.jsonl)",
                       hint="pass the folder that `mlxft train` printed (see `mlxft runs`)")
    if not dry_run:
        if _offline():
            raise _offline_error()
        require_token()
        check_access(repo)
    folder, files, notes = stage_push(run, fmt, repo, Path(out) if out is not None else None, options or ExportOptions())
    if dry_run:
        return PushResult(repo=repo, folder=folder, files=files, notes=notes, dry_run=True)
    url, commit = upload(folder, repo, private=private, message=f"mlxft push: {run.path.name} ({fmt})")
    return PushResult(repo=repo, folder=folder, files=files, notes=notes, url=url, commit_url=commit)
