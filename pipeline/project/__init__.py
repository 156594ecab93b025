"""One folder per photo: the image, its costly inversions, its inputs and its edit history.

Inverting a photo into the diffusion model's noise space is the expensive step of an edit; trying a
new target prompt on a stored inversion is cheap. A project keeps everything needed to come back to
a photo days later and carry on. docs/project-format.md describes the format for people.

Modules: records (the typed values of project.json), codec (its JSON, validation and migrations),
folder (the layout and confined file access), lock (the writer lock and its journal), content
(checksums, PNG encodings, inversion headers), verify (checking referenced files), recovery (setting
damaged files aside), retention (which tunings and inversions are kept), state (what one save
writes), store (the Project class) and health (check and repair).
"""

from pipeline.project.codec import FORMAT, MIGRATIONS, SCHEMA_VERSION, manifest_to_json, migrate_manifest
from pipeline.project.content import INVERSION_FORMAT, INVERSION_METADATA_KEY
from pipeline.project.folder import (
    INPUTS_DIR, INVERSIONS_DIR, LOCK_FILE, MANIFEST_FILE, MASKS_DIR, QUARANTINE_DIR, RESULTS_DIR, SOURCE_FILE,
)
from pipeline.project.health import ProjectHealth, check_project, repair_project
from pipeline.project.lock import DEFAULT_LOCK_TIMEOUT_S, LOCK_STALE_AFTER_S, abandon_claim, making_project
from pipeline.project.records import (
    AreaSettings, EditRecord, FileRecord, ImageRecord, InputKind, InputRecord, InversionRecord, Manifest, ModelRecord,
    Settings,
)
from pipeline.project.retention import KEEP_TUNINGS, Pruned
from pipeline.project.state import KEEP, InputValue, NewEdit, SettingsUpdate
from pipeline.project.store import Project, SetAside, app_version, check_photo_fits, only_creation_remains

__all__ = [
    "DEFAULT_LOCK_TIMEOUT_S", "FORMAT", "INPUTS_DIR", "INVERSIONS_DIR", "INVERSION_FORMAT", "INVERSION_METADATA_KEY",
    "KEEP", "KEEP_TUNINGS", "LOCK_FILE", "LOCK_STALE_AFTER_S", "MANIFEST_FILE", "MASKS_DIR", "MIGRATIONS",
    "QUARANTINE_DIR", "RESULTS_DIR", "SCHEMA_VERSION", "SOURCE_FILE", "AreaSettings", "EditRecord", "FileRecord",
    "ImageRecord", "InputKind", "InputRecord", "InputValue", "InversionRecord", "Manifest", "ModelRecord", "NewEdit",
    "Project", "ProjectHealth", "Pruned", "SetAside", "Settings", "SettingsUpdate", "abandon_claim", "app_version",
    "check_photo_fits", "check_project", "making_project", "manifest_to_json", "migrate_manifest",
    "only_creation_remains", "repair_project",
]
