"""SelTDA: self-taught data augmentation for VQA (Khan et al., CVPR 2023), offline-sized.

The recipe (SelTDA, CVPR 2023): train a *teacher* that writes ``"Question: q Answer: a"`` from an
image alone on the small labelled set; nucleus-sample (top_p 0.9) 1-2 pseudo-labels per
unlabelled image; drop structurally bad outputs; train the student on real + synthetic data
at a chosen synthetic:real ratio, with image augmentation that never flips left/right
(spatial questions would change their answers).

Teachers (all only see pixels):

* ``DetectionTeacher`` (the default for the shapes world): writes questions about what the
  shapes detector (classical computer vision on the image) finds, after illumination
  normalisation, and answers them from those detections. The question-type mix is learnt from
  the labelled set; questions are phrased with the world's training templates. Answerability:
  a question is kept only if its references are unique and its relations clear in a second,
  independent detector view of the image; confidence: the two views must agree on the answer
  and every detection must be confident (``min_score``). Unanswerable and low-confidence
  labels are counted and dropped by ``filter_pseudo_labels``.

* ``VQATeacher`` (the learned teacher of the SelTDA benchmark's headline figure): the shapes
  VQA model fine-tuned on the labelled target set answers the questions an image-conditioned
  generator (trained on the labelled questions) asks about unlabelled target images; a label
  keeps its confidence only if the answer agrees across augmented views of the image and
  paraphrases of the question (``augment.seltda.learned``). The ``DetectionTeacher`` above is a
  hand-built baseline, not a learned teacher.

* ``ShapesTeacher`` for the shapes world: an image-conditioned GRU language model over a word
  vocabulary writes the question; the answer token is produced by a VQA network (a copy of
  the shapes VQA model, fine-tuned on the labelled set) conditioned on the image and the
  generated question. Together they factorise p(question, answer | image) exactly as an
  autoregressive decoder does, p(q | image) * p(a | q, image); both parts are nucleus-sampled.
* ``BlipTeacher`` for Hugging Face BLIP: ``BlipForConditionalGeneration`` trained to caption
  an image with the ``question: q answer: a`` string, sampled with ``generate(do_sample=True,
  top_p=...)``.

Pseudo-labelling runs in-process with a progress bar (``pseudo_label``) or over a large folder
with Ray Data (``pseudo_label_ray``, one teacher per actor, loaded from a saved folder).
``filter_pseudo_labels`` drops unparsable texts, answers outside the student's vocabulary,
duplicates and contradictory pairs (one image, one question, two answers) and counts each.
``world_answer`` reads shapes-world ground truth to *measure* pseudo-label precision; no
teacher or student ever calls it.

Modules: ``labels`` (text format, filter, nucleus sampling), ``detection``, ``generative`` and
``blip`` and ``learned`` (the teachers, each an artifact folder of ``builder.core.artifacts``), ``pseudo``
(pseudo-labelling, student set, augmentation), ``truth`` (precision against the world),
``workspace`` (``augment_workspace``).
"""

from augment.seltda.blip import BlipTeacher
from augment.seltda.detection import DetectionTeacher, illumination_normalise
from augment.seltda.generative import ShapesTeacher, detokenize, qtokens
from augment.seltda.labels import (
    TEACHER_QTYPES,
    UNANSWERABLE,
    FilterReport,
    PseudoLabel,
    filter_pseudo_labels,
    format_qa,
    nucleus_sample,
    parse_qa,
)
from augment.seltda.learned import VQATeacher, paraphrases, parse_question
from augment.seltda.pseudo import (
    augment_image,
    build_student_set,
    load_teacher,
    make_augment,
    pseudo_label,
    pseudo_label_ray,
)
from augment.seltda.truth import count_answers, precision, world_answer
from augment.seltda.workspace import augment_workspace

__all__ = ["TEACHER_QTYPES", "UNANSWERABLE", "BlipTeacher", "DetectionTeacher", "FilterReport", "PseudoLabel",
           "ShapesTeacher", "VQATeacher", "augment_image", "augment_workspace", "build_student_set", "count_answers", "detokenize",
           "filter_pseudo_labels", "format_qa", "illumination_normalise", "load_teacher", "make_augment",
           "nucleus_sample", "paraphrases", "parse_qa", "parse_question", "precision", "pseudo_label", "pseudo_label_ray", "qtokens",
           "world_answer"]
