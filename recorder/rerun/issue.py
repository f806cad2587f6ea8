"""Re-issuing a recorded session's requests against a live endpoint, ids rewritten as it goes.

Guarantees:

* Requests go out in the recorded order, one at a time, through the real
  ``openai`` SDK (:func:`replay.reissue.reissue`) with the recorder attached
  (:func:`recorder.client.record`), so the new session is recorded, and
  redacted, like any other; the API key is the SDK's (``OPENAI_API_KEY``
  unless given) and never reaches the log.
* Every ``POST /responses`` gets ``model`` and the ``overrides`` (dotted
  paths) set; other requests keep their body.
* Ids the original run got back are replaced by the ones this run got back,
  wherever a later request names them: response ids (``previous_response_id``),
  container ids (the tool's ``container``, container paths), container file
  ids (paired by file name, else in order), and output items the client sent
  back as input (each replaced by the new run's item at the same place, or
  left out, and said so, when the new run has none there).
* An exchange whose request the recording does not hold (imports from tools
  that keep no request) is not re-issued, and said so.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from replay.source import Exchange, json_body

__all__ = ["IdMap", "Issued", "apply_overrides", "rewrite"]


@dataclass(slots=True)
class IdMap:
    """Old id → new id, for everything a later request may name."""

    ids: dict[str, str] = field(default_factory=dict)
    items: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    """Old output item id → the new run's item at its place (None: the new run has none)."""

    def learn(self, old: Any, new: Any) -> None:
        """Pair what the original and this run got back for the same request."""
        if isinstance(old, dict) and isinstance(new, dict):
            self._pair_objects(old, new)

    def _pair_objects(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        old_id, new_id = old.get("id"), new.get("id")
        if isinstance(old_id, str) and isinstance(new_id, str) and old_id != new_id:
            self.ids[old_id] = new_id
        old_out = old.get("output") if isinstance(old.get("output"), list) else None
        new_out = new.get("output") if isinstance(new.get("output"), list) else []
        if old_out is None:
            return
        assert isinstance(new_out, list)
        for n, item in enumerate(old_out):
            if not isinstance(item, dict) or not isinstance(item.get("id"), str):
                continue
            twin = new_out[n] if n < len(new_out) and isinstance(new_out[n], dict) else None
            if twin is not None and twin.get("type") != item.get("type"):
                twin = None
            self.items[item["id"]] = twin
            if twin is not None and isinstance(twin.get("id"), str):
                self.ids[item["id"]] = twin["id"]
            old_cid, new_cid = item.get("container_id"), (twin or {}).get("container_id")
            if isinstance(old_cid, str) and isinstance(new_cid, str):
                self.ids.setdefault(old_cid, new_cid)
        self._pair_files(old_out, new_out)

    def _pair_files(self, old_out: list[Any], new_out: list[Any]) -> None:
        old_files = list(_file_citations(old_out))
        new_files = list(_file_citations(new_out))
        by_name = {name: fid for fid, name in new_files if name}
        for n, (fid, name) in enumerate(old_files):
            twin = by_name.get(name) if name else None
            if twin is None and n < len(new_files):
                twin = new_files[n][0]
            if twin is not None:
                self.ids.setdefault(fid, twin)


def _file_citations(output: list[Any]) -> Iterator[tuple[str, str | None]]:
    for item in output:
        if not isinstance(item, dict) or item.get("type") != "message":
            continue
        for part in item.get("content") or []:
            for a in part.get("annotations") or [] if isinstance(part, dict) else []:
                if isinstance(a, dict) and a.get("type") == "container_file_citation":
                    fid, name = a.get("file_id"), a.get("filename")
                    if isinstance(fid, str):
                        yield fid, name if isinstance(name, str) else None


def apply_overrides(body: dict[str, Any], overrides: dict[str, Any]) -> None:
    """Set each dotted ``path`` of ``body`` to its value, creating objects on the way."""
    for path, value in overrides.items():
        keys = path.split(".")
        target = body
        for key in keys[:-1]:
            nxt = target.get(key)
            if not isinstance(nxt, dict):
                nxt = target[key] = {}
            target = nxt
        target[keys[-1]] = value


def _swap(value: Any, ids: dict[str, str]) -> Any:
    """``value`` with every string that is an old id replaced by its new one."""
    if isinstance(value, str):
        return ids.get(value, value)
    if isinstance(value, list):
        return [_swap(v, ids) for v in value]
    if isinstance(value, dict):
        return {k: _swap(v, ids) for k, v in value.items()}
    return value


def _input_items(items: list[Any], idmap: IdMap, notes: list[str]) -> list[Any]:
    out: list[Any] = []
    for item in items:
        old_id = item.get("id") if isinstance(item, dict) else None
        if isinstance(old_id, str) and old_id in idmap.items:
            twin = idmap.items[old_id]
            if twin is None:
                notes.append(
                    f"input item {old_id} came from the original run's output; this run has "
                    "none at its place, so it was left out"
                )
                continue
            out.append(copy.deepcopy(twin))
            continue
        out.append(item)
    return out


@dataclass(frozen=True, slots=True)
class Issued:
    """One original exchange and what was sent for it (``exchange`` None: not re-issued)."""

    original: Exchange
    exchange: Exchange | None
    notes: list[str]


def rewrite(original: Exchange, model: str, overrides: dict[str, Any], idmap: IdMap) -> Issued:
    """The exchange to send for ``original``: model, overrides and ids of this run."""
    notes: list[str] = []
    if not original.request_known:
        notes.append("the recording holds no request for this exchange (an import): not re-issued")
        return Issued(original, None, notes)
    parts = urlsplit(original.url)
    path = "/".join(idmap.ids.get(seg, seg) for seg in parts.path.split("/"))
    url = urlunsplit(parts._replace(path=path))
    body_bytes = original.request_body
    body = json_body(body_bytes)
    if isinstance(body, dict):
        if original.method == "POST" and parts.path.rstrip("/").endswith("/responses"):
            if isinstance(body.get("input"), list):
                body["input"] = _input_items(body["input"], idmap, notes)
            body = _swap(body, idmap.ids)
            body["model"] = model
            apply_overrides(body, overrides)
        else:
            body = _swap(body, idmap.ids)
        body_bytes = json.dumps(body, ensure_ascii=False).encode()
    return Issued(original, dataclasses.replace(original, url=url, request_body=body_bytes), notes)
