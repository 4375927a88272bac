"""The input picker of the launch form: a file explorer over ``acc://``.

It shows the folders this user may read (the access layer decides, through
the user's :class:`~accelerator_prefect.Storage`, which reads the sample inputs
of the models they may run too), only the files of the types the model
accepts, lets them open folders by their names and tick files and whole
folders by their check boxes, start from the model's samples in one click,
upload files from their computer into their own area, and (where the model
allows it) type cloud paths. It returns the ``inputs`` a launch takes. Compact (for the
catalog embedded in another site), the samples and the selection come first and the
browsing and uploading wait in one fold (opened where the model has no samples).
"""

from __future__ import annotations

import unicodedata
from typing import TYPE_CHECKING, Any

from accelerator_prefect.errors import AcceleratorError
from accelerator_prefect.manifest import InputMapping, Source
from accelerator_prefect.storage import PREFIX, Entry, accepts, printable
from catalog_ui.markdown import code, plain, safe_markdown
from catalog_ui.parts import ago, human_size

if TYPE_CHECKING:
    from accelerator_prefect import Storage
    from accelerator_prefect.catalog import HostedVersion
    from catalog_ui.session import Session

MAX_LISTED = 300  # entries shown in one folder; a filter narrows larger ones
SHOWN_NAMES = 6  # files named under a ticked folder


def rule(mapping: InputMapping) -> str:
    """The mapping in one plain sentence: how many files of which types, how large."""
    kinds = ", ".join(mapping.accepted_types) if mapping.accepted_types else "any type"
    low, high = mapping.min_files, mapping.max_files
    if high is None:
        count = f"at least {low}" if low else "any number of"
    elif low == high:
        count = f"exactly {low}"
    else:
        count = f"{low} to {high}"
    text = f"Select {count} file(s) of {kinds}, or folders holding them"
    if mapping.max_total_size:
        text += f"; {mapping.max_total_size} at most in all"
    return text + "."


def parent(uri: str) -> str:
    rest = uri.removeprefix(PREFIX).rstrip("/")
    return PREFIX + (rest.rsplit("/", 1)[0] + "/" if "/" in rest else "")


class Explorer:
    """One explorer on a page; its state lives in ``st.session_state`` under ``key``."""

    def __init__(
        self, session: Session, mapping: InputMapping, key: str, model: str | None = None
    ) -> None:
        """``model``: the model whose inputs these are (default: the page's ``?model=``),
        whose sample inputs the user may then read."""
        import streamlit as st

        self.session = session
        self.mapping = mapping
        self.key = key
        self.model = model or st.query_params.get("model") or session.model
        self.state: Any = st.session_state
        self.state.setdefault(f"{key}:folder", PREFIX)
        self.state.setdefault(f"{key}:selected", {})
        self._storage: Storage | None = None

    @property
    def storage(self) -> Storage:
        """The user's storage, reading also the samples of this model (if they may run it:
        the storage decides)."""
        if self._storage is None:
            storage = self.session.acc.storage
            if self.model and hasattr(storage, "reading_samples"):
                storage = storage.reading_samples(self._versions)
            self._storage = storage
        return self._storage

    def _versions(self, project: str) -> list[HostedVersion]:
        """This model's versions as the user's own client reads them (the page's read)."""
        name = str(self.model)
        hosted = self.session.cached(f"model:{name}", lambda: self.session.acc.get(name))
        return hosted.versions

    @property
    def folder(self) -> str:
        return str(self.state[f"{self.key}:folder"])

    @property
    def selected(self) -> dict[str, Entry]:
        chosen: dict[str, Entry] = self.state[f"{self.key}:selected"]
        return chosen

    def preselect(self, uris: list[str]) -> None:
        """Tick ``uris`` (e.g. the inputs of an earlier run) and open the folder of the first."""
        for uri in uris:
            try:
                self.selected[uri] = self.storage.info(uri)
            except Exception:  # gone or no longer readable: not ticked, nothing to say here
                continue
        if uris:
            self.open(parent(uris[0]))

    def use_samples(self) -> None:
        """Replace the selection with the model's sample inputs, and open the first folder."""
        from catalog_ui.session import plain_error

        chosen: dict[str, Entry] = {}
        for uri in self.mapping.samples:
            try:
                entry = self.storage.info(uri)
            except Exception as exc:  # gone, or not readable: said under the button
                self.state[f"{self.key}:samples-problem"] = (
                    f"The sample inputs cannot be used: {plain_error(exc)}"
                )
                return
            chosen[entry.uri] = entry
        self.state.pop(f"{self.key}:samples-problem", None)
        self.selected.clear()
        self.selected.update(chosen)
        folders = [u for u in chosen if u.endswith("/")]
        if folders:
            self.open(folders[0])

    def open(self, uri: str) -> None:
        self.state[f"{self.key}:folder"] = uri
        self.state.pop(f"{self.key}:filter", None)

    def toggle(self, entry: Entry) -> None:
        if entry.uri in self.selected:
            del self.selected[entry.uri]
        else:
            self.selected[entry.uri] = entry

    def listing(self) -> tuple[list[Entry], int]:
        """The entries of the open folder the model can take, and how many files it can't."""
        entries = self.session.cached(
            f"ls:{self.folder}", lambda: self.storage.ls(self.folder), seconds=5
        )
        usable = [e for e in entries if e.is_folder or accepts(e.name, self.mapping.accepted_types)]
        return usable, len(entries) - len(usable)

    # -- drawing ---------------------------------------------------------------------------

    def breadcrumb(self) -> None:
        import streamlit as st

        parts = self.folder.removeprefix(PREFIX).strip("/").split("/")
        crumbs = [("acc://", PREFIX)]
        for i, part in enumerate(p for p in parts if p):
            crumbs.append((part, PREFIX + "/".join(parts[: i + 1]) + "/"))
        columns = st.columns(len(crumbs) + 1, gap="small", wrap=False)
        for column, (label, uri) in zip(columns, crumbs, strict=False):
            column.button(
                plain(label),  # a folder's name is its maker's words: shown as written
                key=f"{self.key}:crumb:{uri}",
                on_click=self.open,
                args=(uri,),
                type="tertiary",
                icon=":material/folder_open:",
            )

    def rows(self) -> None:
        import streamlit as st

        try:
            entries, hidden = self.listing()
        except Exception as exc:
            from catalog_ui.session import plain_error

            st.warning(f"Cannot open {plain(self.folder)}: {plain_error(exc)}")
            if self.folder != PREFIX:
                st.button(
                    "Back to the top", key=f"{self.key}:top", on_click=self.open, args=(PREFIX,)
                )
            return
        needle = st.text_input(
            "Filter", key=f"{self.key}:filter", placeholder="Filter this folder by name"
        ).lower()
        entries = [e for e in entries if needle in e.name.lower()]
        if not entries and self.folder == PREFIX and not needle:
            st.caption("No folder of yours holds files yet: upload yours below.")
        elif not entries:
            st.caption("Nothing here the model can take." if hidden else "This folder is empty.")
        for entry in entries[:MAX_LISTED]:
            self.row(entry)
        if len(entries) > MAX_LISTED:
            st.caption(f"Showing {MAX_LISTED} of {len(entries)}; type in the filter to narrow.")
        if hidden:
            kinds = ", ".join(self.mapping.accepted_types)
            st.caption(f"{hidden} other file(s) hidden: this model takes {kinds}.")

    def row(self, entry: Entry) -> None:
        """One entry: its check box selects it; its name opens a folder (a file's selects it)."""
        import streamlit as st

        # Never stacked, not even in a narrow frame: a row is one entry.
        tick, name, size, when = st.columns([1, 7, 2, 2], vertical_alignment="center", wrap=False)
        # Buttons, not check boxes: the selection lives here, so no widget value can go
        # stale when the listing changes under it.
        ticked = entry.uri in self.selected
        kind = "folder" if entry.is_folder else "file"
        tick.button(
            "",
            key=f"{self.key}:tick:{entry.uri}",
            icon=":material/check_box:" if ticked else ":material/check_box_outline_blank:",
            help=f"{'Unselect' if ticked else 'Select'} this {kind}",
            on_click=self.toggle,
            args=(entry,),
            type="tertiary",
        )
        if entry.is_folder:
            name.button(
                plain(entry.name) + "/",
                key=f"{self.key}:name:{entry.uri}",
                icon=":material/folder:",
                help="Open this folder",
                on_click=self.open,
                args=(entry.uri,),
                type="tertiary",
            )
        else:
            name.button(
                plain(entry.name),
                key=f"{self.key}:name:{entry.uri}",
                icon=":material/draft:",
                help=f"{'Unselect' if ticked else 'Select'} this file",
                on_click=self.toggle,
                args=(entry,),
                type="tertiary",
            )
        size.caption("folder" if entry.is_folder else human_size(entry.size))
        when.caption(ago(entry.modified))

    def samples(self) -> None:
        """The one-click start: the model's sample inputs, for whoever may run it."""
        import streamlit as st

        if not self.mapping.samples:
            return
        st.button(
            "Use the sample inputs",
            key=f"{self.key}:samples",
            icon=":material/science:",
            help="Select the inputs the model's author provides: "
            + ", ".join(plain(sample) for sample in self.mapping.samples),
            on_click=self.use_samples,
        )
        problem = self.state.get(f"{self.key}:samples-problem")
        if problem:
            st.warning(problem, icon=":material/warning:")

    def upload(self, *, folded: bool = True) -> None:
        """The uploader, in a fold of its own unless ``folded`` is false (it is in one)."""
        import contextlib

        import streamlit as st

        area = f"{PREFIX}{self.session.principal.own_area}/uploads/"
        extensions = [t.lstrip(".") for t in self.mapping.accepted_types if t.startswith(".")]
        only_extensions = len(extensions) == len(self.mapping.accepted_types)
        fold = (
            st.expander("Upload files from your computer", icon=":material/upload:")
            if folded
            else contextlib.nullcontext()
        )
        with fold:
            files = st.file_uploader(
                f"They go into your own folder, {area}",
                type=extensions if extensions and only_extensions else None,
                accept_multiple_files=True,
                # A new key once uploaded: the box empties, ready for the next files.
                key=f"{self.key}:upload:{self.state.get(f'{self.key}:uploads', 0)}",
            )
            for refusal in self.state.get(f"{self.key}:refused", []):
                st.error(refusal, icon=":material/block:")
            if files and st.button("Upload and select", key=f"{self.key}:do-upload"):
                done, refused = [], []
                with st.spinner(f"Uploading {len(files)} file(s)…"):
                    for file in files:  # each on its own: one refused name stops no other
                        name = unicodedata.normalize("NFC", file.name)
                        try:
                            uri = area + name
                            data = file.getvalue()
                            with self.storage.open(uri, "wb", expected_size=len(data)) as out:
                                out.write(data)
                            done.append(self.storage.info(uri))
                        except (AcceleratorError, OSError) as exc:
                            refused.append(f"{printable(name)} was not uploaded: {_reason(exc)}")
                self.state[f"{self.key}:refused"] = refused
                for entry in done:
                    self.selected[entry.uri] = entry
                self.session.forget()
                self.state[f"{self.key}:uploads"] = self.state.get(f"{self.key}:uploads", 0) + 1
                self.open(area)
                st.rerun()

    def summary(self, *, compact: bool = False) -> None:
        """What is selected, each with a button to remove it (``compact``: each in a line,
        a single one in the heading's)."""
        import streamlit as st

        if not self.selected:
            st.caption("Nothing selected yet.")
            return
        files = [e for e in self.selected.values() if not e.is_folder]
        folders = [e for e in self.selected.values() if e.is_folder]
        said = []
        if files:
            said.append(f"{len(files)} file(s), {human_size(sum(e.size for e in files))}")
        if folders:
            said.append(f"{len(folders)} folder(s)")
        alone = compact and len(self.selected) == 1
        if not alone:
            st.markdown(f"**Selected:** {' and '.join(said)}")
        for uri in sorted(self.selected):
            name, remove = st.columns([10, 1], vertical_alignment="center", wrap=False)
            if compact:
                name.markdown(("**Selected:** " if alone else "") + code(uri))
            else:
                name.code(uri, language=None)
            if self.selected[uri].is_folder:
                name.caption(self.expands_to(uri))
            remove.button(
                "",
                key=f"{self.key}:remove:{uri}",
                icon=":material/close:",
                help="Remove from the selection",
                on_click=self.toggle,
                args=(self.selected[uri],),
            )

    def expands_to(self, folder: str) -> str:
        """What a ticked folder gives the run: "6 files: a.nc, b.nc, …" (only the types the
        model takes; earlier runs' outputs inside it are never swept in)."""
        from catalog_ui.session import plain_error

        accepted = self.mapping.accepted_types
        try:
            found = self.session.cached(
                f"files:{folder}", lambda: self.storage.files(folder, accepted), seconds=10
            )
        except Exception as exc:
            return f"Cannot look inside: {plain_error(exc)}"
        if not found:
            return "No file in it that this model takes."
        names = [plain(e.uri.removeprefix(folder)) for e in found]
        shown = ", ".join(names[:SHOWN_NAMES]) + (", …" if len(names) > SHOWN_NAMES else "")
        return f"{len(found)} file(s), {human_size(sum(e.size for e in found))}: {shown}"

    def draw_compact(self) -> None:
        """The samples and the rule on one line, the selection, then a fold to browse and
        upload in (open when the model has no samples to start from)."""
        import streamlit as st

        if self.mapping.samples:
            button, said = st.columns([2, 3], vertical_alignment="center", wrap=False)
            with button:
                self.samples()
            said.caption(rule(self.mapping))
        else:
            st.caption(rule(self.mapping))
        self.summary(compact=True)
        with st.expander(
            "Browse or upload files",
            icon=":material/folder_open:",
            expanded=not self.mapping.samples,
        ):
            with st.container(border=True):
                self.breadcrumb()
                self.rows()
            self.upload(folded=False)

    def cloud_paths(self) -> list[str]:
        import streamlit as st

        text = st.text_area(
            "Cloud paths",
            key=f"{self.key}:cloud",
            placeholder="s3://bucket/path/file.nc — one per line; a folder ends with /",
            help="Files outside the catalog's storage, as URLs the workers can read.",
        )
        return [line.strip() for line in text.splitlines() if line.strip()]

    def draw(
        self, errors: list[str] | None = None, *, compact: bool = False
    ) -> dict[str, list[str]]:
        """Draw the explorer; the ``inputs`` it holds now. ``compact``: the samples and the
        selection first, browsing and uploading in a fold (for a form in little room)."""
        import streamlit as st

        storage = Source.storage in self.mapping.sources
        if storage and compact:
            self.draw_compact()
        elif storage:
            st.caption(rule(self.mapping))
            self.samples()
            with st.container(border=True):
                self.breadcrumb()
                self.rows()
            self.upload()
            self.summary()
        else:
            st.caption(rule(self.mapping))
        cloud = self.cloud_paths() if Source.cloud in self.mapping.sources else []
        for message in errors or []:  # a model's own checks say these in its author's words
            st.error(safe_markdown(message), icon=":material/error:")
        chosen = [*self.selected, *cloud]
        return {
            "selected_files": [u for u in chosen if not u.endswith("/")],
            "selected_folders": [u for u in chosen if u.endswith("/")],
        }


def _reason(exc: BaseException) -> str:
    """Why storage refused a file, in words: after the path, which the message repeats."""
    said = str(exc)
    return said.split(": ", 1)[1] if said.startswith("acc://") and ": " in said else said
