"""Judging a result: a model-free motion score (cav_core.metrics)."""

from __future__ import annotations

from ._io import CATEGORY, io, ui


class CompareMotion(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="CompareMotion",
            display_name="Compare Motion",
            category=CATEGORY,
            description="Scores how alike two videos move, from their optical flow (no model needed): 1 = the same "
                        "motion, 0 = unrelated, -1 = the opposite. It measures motion only (the subject's path and "
                        "timing, camera pans, zooms, rotations), not what the videos show, where the subject starts "
                        "or how large it is. Use it to compare a generated video with the reference clip, e.g. to "
                        "pick a T-LoRA snapshot.",
            inputs=[
                io.Image.Input("reference", tooltip="The reference clip's frames (e.g. from Load Reference Video)."),
                io.Image.Input("generated", tooltip="The video to judge, e.g. from Sample Video. Frame count and size "
                                                    "may differ from the reference's."),
            ],
            outputs=[io.Float.Output(display_name="motion_score",
                                     tooltip="Motion similarity in [-1, 1]. It measures motion only (path, timing, "
                                             "camera), not appearance: a good score says nothing about how the "
                                             "video looks.")],
            is_output_node=True,  # shows its score even when nothing is connected to the output
        )

    @classmethod
    def execute(cls, reference, generated) -> io.NodeOutput:
        from cav_core.metrics import motion_similarity, similarity_text

        score = motion_similarity(reference, generated)
        return io.NodeOutput(score, ui=ui.PreviewText(similarity_text(score)))
