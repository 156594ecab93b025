"""A batch's plan: every edit resolved from the recipe and the inputs, checked, and keyed, before any work.

Everything a mistake can be found from without a model is checked here, so a misspelt column or a
missing mask costs a second, not the first hour of a thousand-photo run: the template fields of every
row, its prompts and parameters (through pipeline.params, as the CLI's --param), its input files, the
names of the results and projects (unique, also on case-insensitive disks) and the model (found and
hashed, not loaded). What needs the model's tokenizer (a word the method cannot find in the prompt)
fails that one photo when its turn comes, and the others go on.

Each edit has a key: a hash of the photo's and the input files' contents, the model's identity and
every value of the edit (prompts, method, each parameter with its default filled in, working size,
seed, precision). The ledger (pipeline.batch.ledger) records keys; a rerun skips those done, so
changing one photo, one prompt or the recipe redoes exactly what it changes.

Where results go (Layout): everything under the output folder, not beside the photos. A catalogue is
often on a share the studio does not want written into, one folder is what a person moves, looks
through or deletes after a batch, and it keeps the projects of different recipes apart unless they
are given the same output folder (then a changed recipe reuses each photo's inversion where its
inversion parameters did not change).
"""

from __future__ import annotations

import hashlib
from collections.abc import Container
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.batch.manifest import BUILTIN_FIELDS, Inputs, Row
from pipeline.batch.recipe import Recipe, RecipeError
from pipeline.errors import RetakeError, shorten
from pipeline.methods.base import input_specs
from pipeline.methods.registry import get_method
from pipeline.models import FileHashes
from pipeline.params import canonical_json, params_from_dict, params_to_dict
from pipeline.request import EditRequest, check_input_names

KEY_FORMAT = "retake-batch-key-1"
STATE_DIR = ".retake-batch"
_NAME_LIMIT = 120
_FORBIDDEN = set('/\\:*?"<>|')


@dataclass(frozen=True)
class Layout:
    """Where a batch writes, all under one output folder (see the module docstring)."""

    out: Path

    @property
    def results(self) -> Path:
        return self.out / "results"

    @property
    def projects(self) -> Path:
        return self.out / "projects"

    @property
    def thumbs(self) -> Path:
        return self.out / "thumbs"

    @property
    def state(self) -> Path:
        """The batch's own bookkeeping: the ledger, its lock, remembered file hashes."""
        return self.out / STATE_DIR

    def result(self, name: str) -> Path:
        return self.results / f"{name}.png"

    def project(self, project_name: str) -> Path:
        return self.projects / f"{project_name}.retake"

    def before_thumb(self, project_name: str) -> Path:
        return self.thumbs / f"{project_name}.before.jpg"

    def after_thumb(self, name: str) -> Path:
        return self.thumbs / f"{name}.after.jpg"

    @property
    def hashes(self) -> Path:
        return self.state / "file-hashes.json"

    def check(self) -> None:
        """The output folder is new, empty or an earlier batch's (RecipeError otherwise); nothing is written."""
        out = self.out
        if out.exists() and not out.is_dir():
            raise RecipeError(f"The output {shorten(out)} is a file; give a folder.")
        try:
            occupied = out.is_dir() and any(out.iterdir())
        except OSError as error:
            raise RecipeError(f"Cannot use the output folder {shorten(out)}: {error.strerror or error}.") from None
        if occupied and not self.state.is_dir():
            raise RecipeError(f"The output folder {shorten(out)} holds other files; give a new or empty folder, or "
                              "the output folder of an earlier batch to go on with it.")

    def make(self) -> None:
        """Create the output folders (RecipeError when they cannot be)."""
        try:
            for folder in (self.results, self.projects, self.thumbs, self.state):
                folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise RecipeError(f"Cannot create the output folder {shorten(self.out)}: {error.strerror or error}.") from None


@dataclass(frozen=True)
class Item:
    """One edit of the plan, everything resolved: what the engine is asked, and its key."""

    name: str
    """The result's name: results/NAME.png."""
    project_name: str
    """The photo's project: projects/PROJECT_NAME.retake (shared by every edit of the same photo)."""
    photo: Path
    where: str
    source: str
    target: str
    params: dict[str, Any]
    inputs: dict[str, str]
    """Every named input of the method: a file, or "" for none (so a project's stored one is never used)."""
    input_prompts: dict[str, str]
    key: str


@dataclass(frozen=True)
class Task:
    """What one worker is handed at a time: the edits of one photo, which share its project and inversion."""

    project_name: str
    photo: Path
    items: tuple[Item, ...]


@dataclass(frozen=True)
class Plan:
    recipe: Recipe
    model_identity: str
    layout: Layout
    items: tuple[Item, ...]
    allow_pickle: bool = False
    """Whether pickled checkpoints may be read (the --allow-pickle flag; never a recipe's choice)."""

    def tasks(self, skip: Container[str] = ()) -> list[Task]:
        """The edits whose keys are not in `skip`, grouped by photo, in the order of the inputs."""
        groups: dict[str, list[Item]] = {}
        for item in self.items:
            if item.key not in skip:
                groups.setdefault(item.project_name, []).append(item)
        return [Task(name, items[0].photo, tuple(items)) for name, items in groups.items()]

    def request(self, item: Item) -> EditRequest:
        """The engine's request for one edit; the worker fills in its own device."""
        recipe = self.recipe
        return EditRequest(
            target_prompt=item.target, image=str(item.photo), source_prompt=item.source,
            project=str(self.layout.project(item.project_name)), model=recipe.model,
            image_encoder=recipe.image_encoder, method=recipe.method, params=dict(item.params),
            inputs=dict(item.inputs), input_prompts=dict(item.input_prompts),
            output=str(self.layout.result(item.name)), seed=recipe.seed, dtype=recipe.dtype,
            max_side=recipe.max_side, area=recipe.area, area_padding=recipe.area_padding, feather=recipe.feather,
            allow_pickle=self.allow_pickle)


def make_plan(recipe: Recipe, inputs: Inputs, layout: Layout, model_identity: str, hashes: FileHashes, *,
              allow_pickle: bool = False) -> Plan:
    """Resolve and check every row (RecipeError, one sentence, at the first problem); reads, never writes."""
    unused = sorted(inputs.columns - recipe.template_fields())
    if unused:
        raise RecipeError(f"The manifest's column {shorten(unused[0])!r} is neither one Retake knows nor a field "
                          "of the recipe's templates; check its spelling.")
    method = get_method(recipe.method)
    declared = [spec.name for spec in input_specs(method.Params)]
    counts: dict[Path, int] = {}
    for row in inputs.rows:
        counts[row.photo] = counts.get(row.photo, 0) + 1
    seen: dict[Path, int] = {}
    items = []
    for row in inputs.rows:
        seen[row.photo] = seen.get(row.photo, 0) + 1
        default_name = row.photo.stem if counts[row.photo] == 1 else f"{row.photo.stem}-{seen[row.photo]}"
        items.append(_item(recipe, method, declared, row, row.name or default_name, inputs.base, model_identity,
                           hashes))
    _check_unique(list({item.photo: (item.project_name, item.photo, item.where) for item in items}.values()),
                  "project")
    _check_unique([(item.name, item.photo, item.where) for item in items], "result")
    return Plan(recipe, model_identity, layout, tuple(items), allow_pickle)


def _item(recipe: Recipe, method: Any, declared: list[str], row: Row, name: str, base: Path, model_identity: str,
          hashes: FileHashes) -> Item:
    where = row.where
    _check_name(name, where)
    _check_name(row.photo.stem, where)
    fields = {"stem": row.photo.stem, "file": row.photo.name, "folder": row.photo.parent.name, **row.fields}
    missing = sorted(recipe.template_fields() - set(fields))
    if missing:
        raise RecipeError(f"For {where} the recipe's templates name {{{missing[0]}}}, which it does not give "
                          f"(fields: {', '.join([*BUILTIN_FIELDS, *sorted(row.fields)])}).")
    prompts = {}
    for which, given, template in (("source", row.source, recipe.source), ("target", row.target, recipe.target)):
        if given is None and template is None:
            raise RecipeError(f"For {where} there is no {which} prompt; give the recipe a {which} or the "
                              f"manifest a {which} column.")
        prompts[which] = given if given is not None else template.fill(fields)
    try:
        check_input_names(recipe.method, method, [*row.inputs, *row.input_prompts])
        params = params_to_dict(params_from_dict(method.Params, {**recipe.params, **row.params}))
    except RetakeError as error:
        raise RecipeError(f"For {where}: {error}") from None
    files = {name: Path(template.fill(fields)) for name, template in recipe.inputs.items()}
    files = {name: base / path for name, path in files.items()}  # an absolute path stays as it is
    files.update(row.inputs)
    input_prompts = {name: template.fill(fields) for name, template in recipe.input_prompts.items()}
    input_prompts.update(row.input_prompts)
    digests = {name: _sha256(path, where, f"the {name} file", hashes) for name, path in files.items()}
    key_data = {"format": KEY_FORMAT, "photo": _sha256(row.photo, where, "the photo", hashes),
                "model": model_identity, "method": recipe.method, "params": params, "max_side": recipe.max_side,
                "source": prompts["source"], "target": prompts["target"], "inputs": digests,
                "input_prompts": input_prompts, "seed": recipe.seed, "dtype": recipe.dtype,
                "image_encoder": recipe.image_encoder}
    key_data.update(recipe.given_area())  # given only: a recipe without them keeps its keys
    return Item(name=name, project_name=row.photo.stem, photo=row.photo, where=where, source=prompts["source"],
                target=prompts["target"], params=params,
                inputs={spec: str(files[spec]) if spec in files else "" for spec in declared},
                input_prompts=input_prompts, key=hashlib.sha256(canonical_json(key_data).encode()).hexdigest())


def _sha256(path: Path, where: str, what: str, hashes: FileHashes) -> str:
    if not path.is_file():
        raise RecipeError(f"For {where} {what} {shorten(path)} does not exist.")
    try:
        return hashes.sha256(path)
    except OSError as error:
        raise RecipeError(f"For {where} {what} {shorten(path)} cannot be read ({error.strerror or error}).") from None


def _check_name(name: str, where: str) -> None:
    """A result or project name is one plain file name on every system Retake runs on."""
    if (not name.strip() or name.startswith(".") or len(name) > _NAME_LIMIT or _FORBIDDEN & set(name)
            or any(ord(c) < 32 for c in name) or name != name.strip()):
        raise RecipeError(f"For {where} the name {shorten(name)!r} cannot be a file name; use letters, digits, "
                          f"spaces, '-', '_' and '.', not first, up to {_NAME_LIMIT} characters.")


def _check_unique(entries: list[tuple[str, Path, str]], what: str) -> None:
    """Two different photos or results may not share a name, even one differing only in case."""
    taken: dict[str, tuple[Path, str]] = {}
    for name, photo, where in entries:
        other = taken.setdefault(name.casefold(), (photo, where))
        if other[1] != where:
            advice = "give a name column" if what == "result" else "rename one of the photos"
            raise RecipeError(f"Two {what}s would be called {shorten(name)!r} ({other[1]} and {where}); {advice}.")
