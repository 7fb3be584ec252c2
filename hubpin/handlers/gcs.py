"""A gs:// folder pin (``GcsPin``, UNCOMPRESSED): read in place by TensorFlow, pinned per
object; a sync checks the listing against the lock (not offline), ``hubpin.resolve``
gives the location."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hubpin.handlers import Handler, PinRequest, Run, Shared
from hubpin.handles import Kind
from hubpin.kinds import GcsObject, GcsPin
from hubpin.plan import Action, Outcome, Step

if TYPE_CHECKING:
    from hubpin.digests import Tree
    from hubpin.project import Project


class GcsHandler(Handler):
    def plan(self, run: Run, alias: str, pin: GcsPin, damage: list[str], shared: Shared) -> Step:
        how = "not checked (no network)" if run.offline or run.from_bundle else "checked"
        return Step(
            alias, Action.CHECK, pin.unpacked_size, 0, f"{pin.location}: read from GCS, {how}", pin
        )

    def execute(
        self, run: Run, step: Step, pin: GcsPin, steps: dict[str, Step], done: dict[str, Outcome]
    ) -> tuple[str, str]:
        if run.offline or run.from_bundle:
            why = "--from: no network" if run.from_bundle else "--offline"
            return "checked", f"gs:// location not checked ({why})"
        from hubpin.gcs.pins import check_folder

        check_folder(pin, run.settings)
        return "checked", f"{pin.location} unchanged ({pin.file_count} objects)"

    def state(self, project: Project, pin: GcsPin) -> str:
        return "remote (gs://, read in place)"

    def where(self, project: Project, pin: GcsPin) -> str:
        return pin.location

    def has_file(self, pin: GcsPin, path: str) -> bool:
        """From the pinned listing, without a round trip to GCS."""
        return any(o.path == path for o in pin.objects)

    def pin(self, request: PinRequest) -> tuple[GcsPin, Tree | None]:
        from hubpin.gcs.pins import list_folder, objects_digest

        source = request.source
        location = (
            request.sources.transport.ask_location(source.location)
            if source.ask_location
            else source.location
        )
        listing = list_folder(location, request.settings)
        made = GcsPin(
            **request.common(),
            kind=Kind.GCS,
            location=location,
            tree_digest=objects_digest(listing),
            unpacked_size=sum(o.size for o in listing),
            file_count=len(listing),
            objects=[GcsObject.model_validate(o.__dict__) for o in listing],
        )
        return made, None
