"""The declared plug-in points (typing.Protocols): a conforming object passes, one missing a member is refused
with one line naming it, and nothing is run to ask (no property of a datamodule reads its annotation file)."""

import pytest
from torch import nn

import vision_attn as va
from vision_attn.data.protocols import DetectionAnnotations
from vision_attn.models.protocols import (
    ClassifierModel,
    CountsClassesInStateDict,
    FeatureHeadModel,
    FiltersCheckpoints,
    IntermediatesModel,
    ResettableClassifier,
    check_protocol,
    conforms,
    missing_members,
)
from vision_attn.tasks import ClassificationTask, DetectionTask, GenerationTask
from vision_attn.tasks.protocols import MonitoredTask


class HalfClassifier(nn.Module):  # a class head without reset_classifier
    def __init__(self):
        super().__init__()
        self.num_classes = 3
        self.fc = nn.Linear(4, 3)

    def get_classifier(self):
        return self.fc


def test_a_model_missing_a_member_is_refused_in_one_line_naming_it():
    with pytest.raises(TypeError) as err:
        check_protocol(HalfClassifier(), ResettableClassifier, "the model")
    assert str(err.value) == "the model: HalfClassifier is not a ResettableClassifier: it lacks reset_classifier"
    check_protocol(HalfClassifier(), ClassifierModel, "the model")  # the head alone is a ClassifierModel
    assert "\n" not in str(err.value)
    with pytest.raises(TypeError, match="^a task: Module is not a MonitoredTask: it lacks checkpoint_monitor$"):
        check_protocol(nn.Module(), MonitoredTask, "a task")


def test_registry_models_declare_what_they_provide():
    vit = va.create_model("vit_nano_patch4_32")
    assert conforms(vit, ClassifierModel) and conforms(vit, FeatureHeadModel) and conforms(vit, FiltersCheckpoints)
    assert missing_members(vit, CountsClassesInStateDict) == ["num_classes_in_state_dict"]
    assert not conforms(nn.Linear(2, 2), ClassifierModel)
    assert conforms(vit, IntermediatesModel) and not conforms(nn.Linear(2, 2), IntermediatesModel)  # getter features
    det = va.create_model("detr_tiny_prenorm", num_classes=3)  # a head, but no reset_classifier
    assert (
        conforms(det, ClassifierModel) and conforms(det, FiltersCheckpoints) and not conforms(det, ResettableClassifier)
    )


def test_every_task_has_one_kind_of_checkpoint_monitor():
    cls = ClassificationTask("vit_nano_patch4_32", num_classes=3, model_args={"depth": 1})
    det = DetectionTask("detr_tiny_prenorm", num_classes=3, monitor="AP")
    assert cls.checkpoint_monitor == ("val/top1", "max") and det.checkpoint_monitor == ("val/AP", "max")
    assert "checkpoint_monitor" in vars(cls) and "checkpoint_monitor" in vars(
        det
    )  # instance attributes, not properties
    assert not hasattr(GenerationTask, "checkpoint_monitor") and not hasattr(DetectionTask, "checkpoint_monitor")


def test_detection_annotations_are_checked_without_reading_the_files(tmp_path):
    from vision_attn.data.coco import COCODataModule

    dm = COCODataModule(root=str(tmp_path / "absent"))  # its properties would raise FileNotFoundError if run
    assert conforms(dm, DetectionAnnotations)
    det = DetectionTask("detr_tiny_prenorm", num_classes=3)
    with pytest.raises(
        TypeError,
        match="^DetectionTask evaluation's datamodule: Module is not a DetectionAnnotations: "
        "it lacks ann_file, category_ids, label_to_category_id, split_name$",
    ):
        det.coco_metrics(nn.Module(), "val")


def test_the_probes_of_tasks_callbacks_and_run_are_declared_protocols(tmp_path):
    """What GAN training, the callbacks and predict read from a model, task or datamodule is a declared protocol:
    the shipped objects conform (without reading files), and a GAN task refuses a model that is no GanModel."""
    from vision_attn.callbacks.protocols import CountsGeneratorSteps, NamesLossTerms, WrapsModel
    from vision_attn.callbacks.sample_grids import SampleGrids
    from vision_attn.data import ImageFolderDataModule, SyntheticShapesDataModule
    from vision_attn.data.protocols import CIFARFormatData, LabelledImages, PredictsImageFiles
    from vision_attn.models.protocols import GanModel, PretrainedConfigured

    gan = GenerationTask(model_args={"ch": 8}, num_classes=3)
    cls = ClassificationTask("vit_nano_patch4_32", num_classes=3, model_args={"depth": 1})
    assert conforms(gan.model, GanModel) and conforms(gan.model, PretrainedConfigured)
    assert conforms(gan, CountsGeneratorSteps) and not conforms(cls, CountsGeneratorSteps)
    assert all(conforms(t, WrapsModel) and conforms(t, NamesLossTerms) for t in (gan, cls))  # before any step
    shapes = SyntheticShapesDataModule(root=str(tmp_path / "absent"))
    folder = ImageFolderDataModule(root=str(tmp_path / "absent"))
    assert conforms(shapes, CIFARFormatData) and conforms(folder, LabelledImages)
    assert not conforms(folder, CIFARFormatData) and conforms(folder, PredictsImageFiles)
    with pytest.raises(TypeError, match="^GenerationTask's model: Linear is not a GanModel: it lacks discriminator, "):
        GenerationTask(model=nn.Linear(2, 2))
    with pytest.raises(TypeError, match="^SampleGrids' module.model: VisionTransformer is not a GanModel"):
        SampleGrids().setup(None, cls, "fit")
