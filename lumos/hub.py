"""Where a model, a tokenizer folder or a tokenizer file comes from: a local path, a built-in model, or
the Hugging Face Hub (through `huggingface_hub` and its cache).

    resolve("runs/my-model")                                            # a folder here
    resolve("moving-digits")                                            # built-in: lumos/assets/moving-digits
    resolve("Alibaba-DAMO-Academy/Lumos-1", subfolder="1B/stage-2-joint-384p")   # a Hub repo (+ folder in it)
    resolve("Alibaba-DAMO-Academy/Lumos-1/1B/stage-2-joint-384p", revision="main")   # the same, one string
    resolve_file("Alibaba-DAMO-Academy/Lumos-1/tokenizer/text_tokenizer.json")   # a file: local or repo/path
    resolve_file("Alibaba-DAMO-Academy/Lumos-1", "tokenizer/text_tokenizer.json")

The first that exists wins: a local path, then a built-in name, then a Hub repo id (`org/name`, then
optionally a path inside the repo). A Hub folder downloads only the files under its subfolder
(`snapshot_download(allow_patterns=...)`), a file only itself (`hf_hub_download`); both go to the Hub
cache (`HF_HOME`/hub, or `HF_HUB_CACHE`; read at call time) and are read from there afterwards.
`HF_HUB_OFFLINE=1` or `local_files_only=True` never touch the network: what is not in the cache is one
LumosError naming the repo, what is missing and how to get it. `revision` is a branch, tag or commit
hash of the Hub repo (default main); it has no meaning for a local folder or a built-in model.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from lumos.utils import LumosError, first_line

ASSETS = Path(__file__).resolve().parent / "assets"
BUILTIN_MODELS = ("moving-digits",)
# org/name[/path/in/repo]: the Hub's characters for names; no leading dot, no empty part, no "..".
_HUB_SPEC = re.compile(r"(?P<repo>[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*)(?:/(?P<path>[^/].*))?")


def split_hub_spec(spec) -> tuple[str, str | None] | None:
    """`org/name[/path]` -> (repo id, path inside the repo or None); None for what cannot be a Hub id
    (an absolute or ./ path, a Windows path, `..`)."""
    s = str(spec)
    m = _HUB_SPEC.fullmatch(s)
    if m is None or "\\" in s or "//" in s or ".." in s.split("/") or s.endswith("/"):
        return None
    return m["repo"], m["path"]


def resolve(name_or_path, subfolder: str | None = None, revision: str | None = None,
            local_files_only: bool | None = None, *, what: str = "", builtin: bool = True,
            patterns: tuple[str, ...] | None = None, assets: Path | None = None) -> Path:
    """A folder: `name_or_path` (joined with `subfolder`) when it exists here; a built-in model name
    (`BUILTIN_MODELS`, in `assets`, default lumos/assets; only with builtin=True); else a Hub repo id
    `org/name[/folder]`, downloaded (or found in the cache) with only the files under the folder that
    match `patterns` (default: all). what: the kind of folder, for messages ("checkpoint")."""
    name, where = str(name_or_path), Path(name_or_path)
    if not where.exists() and builtin and name in BUILTIN_MODELS:
        where = (assets or ASSETS) / name
        if not where.is_dir():
            raise LumosError(f"built-in model {name!r} is not installed ({where} is missing); "
                             f"pass --model PATH to a pipeline folder")
    if where.exists():
        _local_only(name, revision)
        local = where / subfolder if subfolder else where
        if not local.is_dir():
            raise LumosError(f"{local}: not a {what or 'model'} folder"
                             + (" (expected config.json, *.safetensors, tokenizers)" if not what else ""))
        return local
    hub = split_hub_spec(name)
    if hub is None:
        kinds = f"not a built-in model (built-in: {', '.join(BUILTIN_MODELS)})" if builtin else "not a Hub repo id"
        raise LumosError(f"{what or 'model'} {name!r}: no such {what + ' ' if what else ''}folder "
                         f"and {kinds}" + (" nor a Hub repo id (ORG/NAME)" if builtin else ""))
    repo, inner = hub
    folder = "/".join(p.strip("/") for p in (inner, subfolder) if p) or None
    allow = [f"{folder}/{p}" if folder else p for p in patterns] if patterns else (
        [f"{folder}/*"] if folder else None)
    snapshot = _download(repo, revision, local_files_only, what or "model", folder,
                         lambda hf, **kw: hf.snapshot_download(repo, allow_patterns=allow, **kw))
    out = Path(snapshot) / folder if folder else Path(snapshot)
    if not out.is_dir():
        why = ("is not in the cached snapshot and downloads are off; run once with network or "
               f"`hf download {repo} --include '{folder}/*'`") if offline(local_files_only) else "no such folder in the repo"
        raise LumosError(f"{what or 'model'} {repo!r} (revision {revision or 'main'}): {folder!r} {why} "
                         f"({_found_in(snapshot)}); check --subfolder")
    return out


def resolve_file(spec, filename: str | None = None, revision: str | None = None,
                 local_files_only: bool | None = None, *, what: str = "file") -> Path:
    """A file: `spec` (or `spec`/`filename`) when it exists here; else a Hub file, given as
    `org/name/path/in/repo` or as repo id `spec` + `filename`, downloaded alone (or found in the cache)."""
    local = Path(spec) / filename if filename else Path(spec)
    if local.exists():
        _local_only(spec, revision)
        if not local.is_file():
            raise LumosError(f"{what} {local}: a folder, not a file")
        return local
    hub = split_hub_spec(spec)
    repo, inner = hub if hub else (None, None)
    path = "/".join(p.strip("/") for p in (inner, filename) if p)
    if hub is None or not path:
        raise LumosError(f"{what} {str(local)!r}: no such file here, and not a Hub file "
                         f"(ORG/NAME/PATH/IN/REPO)")
    return Path(_download(repo, revision, local_files_only, what, path,
                          lambda hf, **kw: hf.hf_hub_download(repo, path, **kw)))


# ---------------------------------------------------------------------------------------------- the Hub
def cache_dir() -> Path:
    """The Hub cache the environment names now: HF_HUB_CACHE, else HF_HOME/hub, else huggingface_hub's
    default (~/.cache/huggingface/hub)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.path.expandvars(os.environ["HF_HUB_CACHE"])).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.path.expandvars(os.environ["HF_HOME"])).expanduser() / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def offline(local_files_only: bool | None = None) -> bool:
    """No network: local_files_only=True, or HF_HUB_OFFLINE set now (or when huggingface_hub was imported)."""
    from huggingface_hub import constants

    env = os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE")
    return bool(local_files_only) or env or bool(constants.HF_HUB_OFFLINE)


def _download(repo: str, revision, local_files_only, what: str, inside: str | None, fetch) -> str:
    """Run `fetch(huggingface_hub, cache_dir=..., revision=..., local_files_only=...)`; every failure is
    one LumosError naming the repo, the revision, what is missing and what to do."""
    try:
        import huggingface_hub as hf
        from huggingface_hub.utils import (EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError,
                                           RevisionNotFoundError)
    except ImportError:
        raise LumosError(f"{what} {repo!r} is a Hub repo id, which needs huggingface_hub "
                         f"(pip install 'huggingface_hub>=0.20'), or pass a local folder") from None
    no_net = offline(local_files_only)
    cache = cache_dir()
    rev = revision or "main"
    desc = f"{what} {repo!r}" + (f" ({inside}, revision {rev})" if inside else f" (revision {rev})")
    get = f"hf download {repo}" + (f" --revision {rev}" if revision else "") + (
        f" --include '{inside}/*'" if inside and what in ("model", "checkpoint") else f" {inside}" if inside else "")
    # huggingface_hub reads HF_HUB_OFFLINE once, when it is imported; set later (or local_files_only), it must
    # still not go online for anything (e.g. the request headers it builds even for a cache read), so its
    # flag is raised for the duration of the call.
    was = hf.constants.HF_HUB_OFFLINE
    hf.constants.HF_HUB_OFFLINE = was or no_net
    try:
        return fetch(hf, cache_dir=cache, revision=revision, local_files_only=no_net)
    except LocalEntryNotFoundError as e:          # not in the cache, and the Hub was not (or could not be) asked
        why = ("downloads are off (" + ("local_files_only=True" if local_files_only else "HF_HUB_OFFLINE=1") + ")"
               if no_net else f"the Hub cannot be reached ({first_line(e.__cause__ or e)})")
        raise LumosError(f"{desc}: not in the Hub cache {cache}, and {why}; run once with network, or "
                         f"`{get}` (huggingface-cli download in older versions), or set HF_HOME to a cache "
                         f"that holds it (no local path of that name either)") from None
    except RevisionNotFoundError:
        raise LumosError(f"{desc}: the repo has no revision {rev!r}; give a branch, tag or commit hash "
                         f"(--revision)") from None
    except RepositoryNotFoundError:             # GatedRepoError too
        raise LumosError(f"{what} {repo!r}: no such Hub repo (or a private / gated one: `hf auth login`), "
                         f"and no local path of that name") from None
    except EntryNotFoundError:
        raise LumosError(f"{desc}: no such file in the repo") from None
    except Exception as e:                      # network, disk, a bad id: huggingface_hub's own errors
        raise LumosError(f"{desc}: cannot get it from the Hub ({first_line(e)})") from None
    finally:
        hf.constants.HF_HUB_OFFLINE = was


def _local_only(name, revision) -> None:
    if revision is not None:
        raise LumosError(f"{name}: a local folder or built-in model has no revision "
                         f"(--revision is for a Hub repo id)")


def _found_in(snapshot) -> str:
    names = sorted(p.name for p in Path(snapshot).iterdir())[:6]
    return "it holds: " + ", ".join(names) if names else "the cached snapshot is empty"
