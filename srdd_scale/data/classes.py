"""Class tables of labelled corpora: which class name has which id, read once per corpus.

An ImageFolder corpus (``root/<class_name>/<image>``) numbers its classes by sorted folder name, unless
the root holds a ``classes.txt`` (one name per line, line i = id i) or ``classes.json`` (a list of names,
or a ``{name: id}`` object) that fixes the order. Webdataset shards carry ids (``KEY.cls``) or names
(``KEY.json`` "label"); their table comes from the same files next to the tars, or from
``data.num_classes`` (names are then the ids). The table goes into meta.json, so a trained model knows
what each of its class ids means.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from srdd_scale.config import ConfigError

CLASS_FILES = ("classes.txt", "classes.json")


def read_class_file(folder: Path) -> tuple[str, ...] | None:
    """Class names by id from ``folder``'s classes.txt or classes.json; None when it has neither."""
    text_file, json_file = (folder / name for name in CLASS_FILES)
    if text_file.is_file():
        names = tuple(line.strip() for line in text_file.read_text().splitlines() if line.strip())
    elif json_file.is_file():
        try:
            value = json.loads(json_file.read_text())
        except json.JSONDecodeError as err:
            raise ConfigError(f"{json_file}: not valid JSON ({err})") from err
        if isinstance(value, dict):
            ids = sorted(value.values()) if all(isinstance(v, int) for v in value.values()) else None
            if ids != list(range(len(value))):
                raise ConfigError(f"{json_file}: a {{name: id}} object needs the ids 0..{len(value) - 1} once each")
            names = tuple(sorted(value, key=value.__getitem__))
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            names = tuple(value)
        else:
            raise ConfigError(f"{json_file}: expected a list of class names or a {{name: id}} object")
    else:
        return None
    if not names or len(set(names)) != len(names):
        raise ConfigError(f"{folder}: the class table is empty or names a class twice")
    return names


def folder_class_table(roots: Sequence[Path]) -> tuple[str, ...]:
    """An ImageFolder corpus' table: the first root's classes file, else the sorted sub-folder names."""
    for root in roots:
        names = read_class_file(root)
        if names is not None:
            return names
    names = sorted({child.name for root in roots for child in root.iterdir()
                    if child.is_dir() and not child.name.startswith(".")})
    if not names:
        raise ConfigError(f"data.class_labels=true but {', '.join(map(str, roots))} has no class sub-folders "
                          "(expected root/<class_name>/<image>) and no classes.txt/classes.json")
    return tuple(names)


def webdataset_class_table(tars: Sequence[Path], num_classes: int) -> tuple[str, ...]:
    """A webdataset corpus' table: a classes file next to the first tar, else ids 0..num_classes-1."""
    names = read_class_file(Path(tars[0]).parent)
    if names is not None:
        return names
    if num_classes > 0:
        return tuple(str(i) for i in range(num_classes))
    raise ConfigError(f"data.class_labels=true: no classes.txt/classes.json next to {tars[0]} and "
                      "data.num_classes=0; add one of them so that the class ids have a known range")


def parse_label(value: object, names: Sequence[str]) -> tuple[int, str | None]:
    """A label (int id, numeric string or class name) -> (class id, skip_reason)."""
    if isinstance(value, bool):
        return -1, "bad_label"
    if isinstance(value, str):
        value = value.strip()
        if value in names:
            return names.index(value), None
        if not value.lstrip("-").isdigit():
            return -1, "unknown_class"
        value = int(value)
    if not isinstance(value, int):
        return -1, "bad_label"
    return (value, None) if 0 <= value < len(names) else (-1, "bad_label")


def class_meta(names: Sequence[str] | None) -> dict:
    """meta.json entries of a corpus: ``num_classes`` (0: no labels) and the id -> name table."""
    return {"num_classes": len(names), "classes": list(names)} if names else {"num_classes": 0}


def check_class_labels(meta: dict, model_classes: int, folder: str) -> None:
    """Refuse shards a class-conditional model cannot learn from: no labels, or more classes than it has."""
    if model_classes <= 0:
        return
    found = int(meta.get("num_classes", 0))
    if found == 0:
        raise ConfigError(f"{folder}: the shards carry no class labels (meta.json num_classes=0) but "
                          f"model.num_classes={model_classes}; pretokenize with data.class_labels=true, or "
                          "train with model.num_classes=0")
    if found > model_classes:
        raise ConfigError(f"{folder}: the shards have {found} classes but model.num_classes={model_classes}; "
                          f"set model.num_classes={found}")
