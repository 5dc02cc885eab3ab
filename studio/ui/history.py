"""The History tab: your own generations, newest first, a page at a time; reuse their parameters,
send them to another tab, or delete them (file and record)."""

from __future__ import annotations

import gradio as gr

from studio.ui.common import SEND_TARGETS, Results, history_owner
from studio.ui.published import publish
from studio.ui.widgets import user_error

PER_PAGE = 24


def create_tab(studio):
    """Returns (the tab, its Results for send-to wiring, the tab-name State the reuse button reads)."""
    with gr.Tab("History", id="history") as tab:
        with gr.Row(equal_height=True):
            refresh = gr.Button("🔄 Refresh", size="sm", scale=0, min_width=120)
            previous = gr.Button("◀ Newer", size="sm", scale=0, min_width=120)
            label = gr.Markdown("", elem_id="history-page")
            following = gr.Button("Older ▶", size="sm", scale=0, min_width=120)
        gallery = gr.Gallery(label="Your generations", columns=6, height=420, object_fit="contain",
                             interactive=False, elem_id="history-gallery")
        info = gr.Textbox(label="Parameters", lines=4, interactive=False, elem_id="history-info")
        with gr.Row():
            reuse = gr.Button("♻️ Reuse parameters", variant="primary", size="sm", elem_id="history-reuse")
            send = {target: gr.Button(text, size="sm", elem_id=f"history-send-{target}")
                    for target, text in SEND_TARGETS.items()}
            delete = gr.Button("🗑 Delete", variant="stop", size="sm", elem_id="history-delete")
        page, ids, tabs_of, infotexts, selected = gr.State(0), gr.State([]), gr.State([]), gr.State([]), gr.State(0)

    def show(page_number, request: gr.Request):
        owner = history_owner(request)
        total = studio.history.count(owner)
        pages = max(1, -(-total // PER_PAGE))
        page_number = min(max(0, page_number), pages - 1)
        entries = studio.history.page(owner, page_number, PER_PAGE)
        entries = [entry for entry in entries if entry.path.is_file()]
        items = list(zip(publish([entry.path for entry in entries]), [entry.tab for entry in entries]))
        text = f"Page {page_number + 1} of {pages} · {total} image{'s' if total != 1 else ''}"
        first = entries[0].infotext if entries else ""
        return (items, page_number, [e.id for e in entries], [e.tab for e in entries],
                [e.infotext for e in entries], 0, text, first)

    listing = [gallery, page, ids, tabs_of, infotexts, selected, label, info]
    tab.select(show, inputs=page, outputs=listing, api_visibility="private")
    refresh.click(show, inputs=page, outputs=listing, api_name="history")  # the caller's own history
    previous.click(lambda p: p - 1, inputs=page, outputs=page, api_visibility="private").then(
        show, inputs=page, outputs=listing, api_visibility="private")
    following.click(lambda p: p + 1, inputs=page, outputs=page, api_visibility="private").then(
        show, inputs=page, outputs=listing, api_visibility="private")

    def pick(texts, evt: gr.SelectData):
        index = evt.index if isinstance(evt.index, int) else 0
        return (texts[index] if 0 <= index < len(texts) else ""), index

    gallery.select(pick, inputs=infotexts, outputs=[info, selected], api_visibility="private")

    def remove(page_number, entry_ids, index, request: gr.Request):
        if not entry_ids:
            raise user_error("Nothing to delete on this page.")
        studio.history.delete(history_owner(request), entry_ids[min(index, len(entry_ids) - 1)])
        return show(page_number, request)

    delete.click(remove, inputs=[page, ids, selected], outputs=listing, api_visibility="private")
    results = Results(gallery, info, infotexts, selected, send)
    return results, tabs_of, reuse
