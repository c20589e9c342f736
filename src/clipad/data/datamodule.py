"""AnomalyDataModule: the target (test) datasets, the auxiliary training datasets, validation, few-shot prompts.

Built from the whole composed run config by `AnomalyDataModule.from_config(cfg)`; see its docstring for the
keys it reads.
"""
from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
import torch.distributed as dist
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from torch.utils.data import ConcatDataset, DataLoader, DistributedSampler, Sampler

from clipad.data.bad_inputs import BadInput, BadInputLog
from clipad.data.batch import SampleRow
from clipad.data.catalog import DatasetError, dataset_root, load_dataset_config, prompt_name
from clipad.data.dataset import AnomalyDataset, collate_batch, sample_id
from clipad.data.few_shot import (
    draw_prompts,
    draw_view_prompts,
    prompt_pool,
    view_prompt_pools,
    write_prompt_list,
    write_prompt_record,
)
from clipad.data.input_check import check_rows, enforce_policies
from clipad.data.overlap import overlap_message, shared_samples
from clipad.data.scanners import GENERATED_LAYOUTS, scan
from clipad.data.scanners.selection import check_missing_masks, has_pixel_labels, run_classes, select_rows
from clipad.data.transforms import SampleTransform

log = logging.getLogger(__name__)

# Options a user sets on the target's node (data.X=...) that apply to every dataset of the run.
RUN_OPTIONS = ("class_names", "skip_bad", "missing_mask", "empty_mask", "large_mask", "check_files")
NO_VALIDATION = ("none", "None", "null", "")


@dataclass
class DatasetSource:
    """A dataset of the run: its name (`data=` name), its data node and its root folder."""

    name: str
    cfg: DictConfig
    root: Path

    @property
    def layout(self) -> str:
        return str(self.cfg.get("layout", self.name))


class AnomalyDataModule(L.LightningDataModule):
    def __init__(
        self,
        *,
        targets: Sequence[DatasetSource],
        train: Sequence[DatasetSource] = (),
        val: DatasetSource | None = None,
        image_size: int | Sequence[int],
        mean: Sequence[float],
        std: Sequence[float],
        batch_size: int = 8,
        eval_batch_size: int = 8,
        num_workers: int = 0,
        train_split: str = "test",
        augment: Sequence | None = None,
        shots: int = 0,
        few_shot_seed: int = 0,
        output_dir: Path | None = None,
        mosaic_p: float = 0.0,
        mosaic_datasets: Sequence[str] = ("mvtec",),
        pair_normal: bool = False,
        seed: int = 0,
        allow_overlap: bool = False,
    ) -> None:
        super().__init__()
        if not targets:
            raise ValueError("no target dataset: set data=NAME (or data.test=[...])")
        self._targets = list(targets)
        self._train = list(train)
        self._val = val
        self._sources = {s.name: s for s in [*self._targets, *self._train, *([val] if val else [])]}
        self.batch_size, self.eval_batch_size, self.num_workers = batch_size, eval_batch_size, num_workers
        self.train_split = train_split
        self.shots, self.few_shot_seed, self.output_dir = int(shots), int(few_shot_seed), output_dir
        self.mosaic_p, self.mosaic_datasets, self.pair_normal = float(mosaic_p), list(mosaic_datasets), pair_normal
        self.seed = int(seed)
        self.allow_overlap = bool(allow_overlap)
        self.overlap_count: int | None = None  # images both trained and tested/validated on; None: not checked
        self.eval_transform = SampleTransform(image_size, mean, std)
        self.train_transform = SampleTransform(image_size, mean, std, augment) if augment else self.eval_transform
        self.train_set: ConcatDataset | None = None
        self.val_set: AnomalyDataset | None = None
        self.test_set: ConcatDataset | None = None
        self._tables: dict[str, list[SampleRow]] = {}
        self._selected: dict[tuple[str, str], list[SampleRow]] = {}  # (dataset, split) -> checked rows
        self._pools: dict[tuple[str, str], list[SampleRow]] = {}  # (dataset, class) -> checked normal pool
        # Every fallback of the run, listed in <output_dir>/bad_inputs.csv (DDP: by rank 0 only).
        self.bad_inputs = BadInputLog(output_dir if rank_zero_only.rank == 0 else None)
        self._prompts: dict[tuple[str, ...], torch.Tensor] = {}  # (dataset, class[, view]) -> prompt images
        self._view_draws: dict[str, dict[str, dict[str, list[SampleRow]]]] = {}  # dataset -> class -> view -> rows
        self._prompt_record: dict[str, dict] = {"prompts": {}, "splits": {}}

    @classmethod
    def from_config(cls, cfg: DictConfig) -> AnomalyDataModule:
        """Build from the whole composed config. Keys read:

        data.{name, test, train, val, train_classes, train_split, allow_overlap, batch_size, eval_batch_size,
        num_workers, augment} and the run options data.{class_names, skip_bad, missing_mask, empty_mask, large_mask,
        check_files} (applied to every dataset of the run);
        model.{aux_data.default, aux_data.by_target, mosaic_p, mosaic_datasets, pair_normal} (optional);
        paths.{data_dir, output_dir}; backbone.{image_size, mean, std}; shots; few_shot_seed.
        Each other dataset's node is conf/data/<name>.yaml (clipad.data.catalog); the target's is cfg.data,
        so overrides such as data.classes apply to it.
        """
        data = cfg.data
        target = str(data.name)
        data_dir = OmegaConf.select(cfg, "paths.data_dir", default=None)
        data_dir = None if data_dir is None else Path(str(data_dir)).expanduser()

        def source(name: str) -> DatasetSource:
            node = data if name == target else _with_run_options(load_dataset_config(name), data, name)
            return DatasetSource(name, node, dataset_root(node, data_dir))

        test_names = _names(data.get("test")) or [target]
        rule = _aux_rule(cfg, target)
        train_names = _names(data.train) if data.get("train") is not None else _names(rule.get("train"))
        val_name = data.get("val")
        if val_name is None:
            val_name = rule.get("val")
        val_name = None if val_name is None or str(val_name) in NO_VALIDATION else str(val_name)
        model = cfg.get("model") or OmegaConf.create({})
        return cls(
            targets=[source(n) for n in test_names],
            train=[source(n) for n in train_names],
            val=source(val_name) if val_name else None,
            image_size=cfg.backbone.image_size,
            mean=list(cfg.backbone.mean),
            std=list(cfg.backbone.std),
            batch_size=int(data.get("batch_size", 8)),
            eval_batch_size=int(data.get("eval_batch_size", 8)),
            num_workers=int(data.get("num_workers", 0)),
            train_split=str(data.get("train_split", "test")),
            augment=data.get("augment"),
            shots=int(cfg.get("shots", 0) or 0),
            few_shot_seed=int(cfg.get("few_shot_seed", 0) or 0),
            output_dir=_output_dir(cfg),
            mosaic_p=float(model.get("mosaic_p", 0) or 0),
            mosaic_datasets=list(model.get("mosaic_datasets", ["mvtec"])),
            pair_normal=bool(model.get("pair_normal", False)),
            seed=int(cfg.get("seed", 0) or 0),
            allow_overlap=bool(data.get("allow_overlap", False)),
        )

    # -- what the run uses ------------------------------------------------------------------------------
    @property
    def test_datasets(self) -> list[str]:
        return [s.name for s in self._targets]

    @property
    def train_datasets(self) -> list[str]:
        return [s.name for s in self._train]

    @property
    def val_dataset(self) -> str | None:
        return self._val.name if self._val else None

    @property
    def has_validation(self) -> bool:
        return self._val is not None

    @property
    def domains(self) -> dict[str, str]:
        """Dataset name -> domain (industrial, medical, ...) for every dataset of the run."""
        return {name: str(s.cfg.get("domain", "unknown")) for name, s in self._sources.items()}

    def metric_options(self) -> dict:
        """AnomalyMetrics options of the targets: data.pixel_eval_size and data.anomaly_types per dataset."""
        targets = {s.name: s.cfg for s in [*self._targets, *([self._val] if self._val else [])]}
        return {
            "pixel_eval_size": {n: int(c.pixel_eval_size) for n, c in targets.items() if c.get("pixel_eval_size")},
            "anomaly_types": {n: dict(c.anomaly_types) for n, c in targets.items() if c.get("anomaly_types")},
        }

    def classes(self, dataset: str) -> list[str]:
        """The classes of `dataset` this run uses (scans the root on first call)."""
        source = self._sources[dataset]
        return run_classes(source.cfg, self.table(dataset), source.root)

    def prompt_name(self, dataset: str, cls_name: str) -> str:
        """The class name as it enters text prompts (data.class_names: faithful or readable)."""
        return prompt_name(self._sources[dataset].cfg, cls_name)

    def table(self, dataset: str) -> list[SampleRow]:
        """Every row of `dataset` (all classes and splits found), scanned once."""
        if dataset not in self._tables:
            source = self._sources[dataset]
            self._tables[dataset] = scan(source.layout, source.root, source.cfg)
        return self._tables[dataset]

    # -- checking the inputs ------------------------------------------------------------------------------
    def check_inputs(self, few_shot: bool | None = None) -> None:
        """Scan and validate every dataset the run will touch (training, validation, every target) before any
        work: roots, classes, missing masks and, with data.check_files (default), every image and mask decoded.

        few_shot: also check the targets' normal prompt pools (default: when shots > 0). Raises a ClipadError
        (DatasetError, ImageReadError) naming the file or option; counted fallbacks go to self.bad_inputs.
        """
        for source in self._train:
            self._rows(source, self.train_split)
            if self.pair_normal:
                for cls in dict.fromkeys(r["cls_name"] for r in self._rows(source, self.train_split)):
                    self._prompt_pool(source, cls)
        if self._val is not None:
            self._rows(self._val, "test")
        for source in self._targets:
            self._rows(source, "test")
            if (self.shots > 0) if few_shot is None else few_shot:
                for cls in self.classes(source.name):
                    self._prompt_pool(source, cls)

    def _rows(self, source: DatasetSource, split: str) -> list[SampleRow]:
        """The rows of `split` the run uses, checked once (unreadable ones dropped with data.skip_bad=true)."""
        key = (source.name, split)
        if key not in self._selected:
            rows = self._checked(source, select_rows(source.cfg, self.table(source.name), split, source.root))
            check_missing_masks(rows, dataset=source.name, pixel_labels=self._pixel_labels(source),
                                policy=str(source.cfg.get("missing_mask", "error")))
            self._selected[key] = rows
        return self._selected[key]

    def _prompt_pool(self, source: DatasetSource, cls_name: str) -> list[SampleRow]:
        """The class's normal prompt pool (few-shot prompts, normal pairing), checked once."""
        key = (source.name, cls_name)
        if key not in self._pools:
            pool, split = prompt_pool(self.table(source.name), cls_name, source.name)
            self._pools[key] = self._checked(source, pool)
            if not self._pools[key]:
                raise DatasetError(f"every normal image of {source.name}/{cls_name} ({split} split) is unreadable; "
                                   f"see {self.bad_inputs.csv_path or 'the warnings above'}")
        return self._pools[key]

    def _checked(self, source: DatasetSource, rows: list[SampleRow]) -> list[SampleRow]:
        cfg = source.cfg
        skip_bad = bool(cfg.get("skip_bad", False))
        if not (cfg.get("check_files", True) or skip_bad):
            return rows
        report = check_rows(rows, dataset=source.name, mask_rule=str(cfg.get("mask_rule", "auto")),
                            pixel_labels=self._pixel_labels(source))
        for entry in self.bad_inputs.record(report.findings):
            log.warning("%s: %s %s%s", entry.dataset, entry.kind.replace("_", " "), entry.file,
                        f" ({entry.detail})" if entry.detail else "")
        enforce_policies(report, skip_bad=skip_bad, empty_mask=str(cfg.get("empty_mask", "warn")),
                         large_mask=str(cfg.get("large_mask", "warn")),
                         listed_in=str(self.bad_inputs.csv_path or ""))
        usable = report.usable(rows)
        if len(usable) < len(rows):
            log.warning("skipped %d unreadable samples of dataset %r (data.skip_bad=true), e.g. %s",
                        len(rows) - len(usable), source.name, sorted(report.unreadable_files)[:3])
        return usable

    def check_overlap(self) -> int:
        """Refuse a run that trains on images it also tests or validates on; returns how many there are.

        With data.allow_overlap=true they are counted and warned about instead. Checked once per datamodule.
        """
        if self.overlap_count is not None:
            return self.overlap_count
        evaluated = [(s, "test") for s in self._targets] + ([(self._val, "validation")] if self._val else [])
        findings = []
        for train_source in self._train:
            train_rows = select_rows(train_source.cfg, self.table(train_source.name), self.train_split,
                                     train_source.root)
            for source, role in evaluated:
                eval_rows = select_rows(source.cfg, self.table(source.name), "test", source.root)
                shared = shared_samples(train_rows, eval_rows)
                if shared:
                    findings.append((len(shared), overlap_message(shared, train_source.name, self.train_split,
                                                                  source.name, role)))
                    if self.allow_overlap:
                        self.bad_inputs.record(
                            BadInput("train_test_overlap", path, source.name, detail=f"trained on in {train_source.name}")
                            for path in shared
                        )
        self.overlap_count = sum(count for count, _ in findings)
        if findings and not self.allow_overlap:
            raise DatasetError(
                "; ".join(text for _, text in findings) + ". Their metrics would measure memory, not zero-shot "
                "transfer. Train on other data (data.train=[...]) or other classes, or set data.allow_overlap=true "
                "to run anyway (counted and warned)."
            )
        for _, text in findings:
            log.warning("data.allow_overlap=true: %s", text)
        if findings:
            log.warning("%d images are both training and test/validation samples (data.allow_overlap=true)",
                        self.overlap_count)
        return self.overlap_count

    # -- Lightning hooks --------------------------------------------------------------------------------
    def prepare_data(self) -> None:
        # Generated datasets are built once per node (Lightning calls this on local rank 0 only).
        for source in self._sources.values():
            if source.layout in GENERATED_LAYOUTS:
                self.table(source.name)

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit") and self.train_set is None and self._train:
            self.check_overlap()
            self.train_set = ConcatDataset([self._dataset(s, self.train_split, training=True) for s in self._train])
        if stage in (None, "fit", "validate") and self.val_set is None and self._val is not None:
            self.val_set = self._dataset(self._val, "test", training=False)
        if stage in (None, "test", "predict") and self.test_set is None:
            self.test_set = ConcatDataset([self._dataset(s, "test", training=False) for s in self._targets])

    def train_dataloader(self) -> DataLoader:
        if self.train_set is None:
            raise RuntimeError("no training data: set data.train=[...] (or the model's aux_data), then setup('fit')")
        return self._loader(self.train_set, self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader | list:
        return [] if self.val_set is None else self._loader(self.val_set, self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        """One loader over every target dataset, ordered by (dataset, class, path)."""
        if self.test_set is None:
            self.setup("test")
        return self._loader(self.test_set, self.eval_batch_size, shuffle=False)

    def normal_loader(self, dataset: str, split: str = "train", exclude: Collection[str] = ()) -> DataLoader:
        """The normal images of one dataset's `split` (e.g. its train/good), evaluation transform, in order;
        rows whose sample_id is in `exclude` are left out."""
        source = self._sources[dataset]
        rows = [r for r in self._rows(source, split) if r["label"] == 0 and sample_id(r) not in exclude]
        if not rows:
            raise DatasetError(f"dataset {dataset!r} has no normal images in its {split!r} split under {source.root}")
        normals = AnomalyDataset(
            rows, dataset=dataset, transform=self.eval_transform,
            prompt_names={c: prompt_name(source.cfg, c) for c in dict.fromkeys(r["cls_name"] for r in rows)},
            pixel_labels=False, mask_rule=str(source.cfg.get("mask_rule", "auto")),
        )
        return self._loader(normals, self.eval_batch_size, shuffle=False)

    # -- few-shot ---------------------------------------------------------------------------------------
    def normal_prompt_images(self, dataset: str, cls_name: str, view_id: str | None = None) -> torch.Tensor:
        """[shots, 3, H, W]: the class's normal prompt images, the same tensor for every query of the class.

        view_id (multi-view datasets): the prompts of that view only, drawn per (class, view) as the AdaptCLIP
        reference does; they are also listed in <output_dir>/<dataset>_<k>shot_seed<s>_prompts.txt.
        """
        key = (dataset, cls_name) if view_id is None else (dataset, cls_name, view_id)
        if key not in self._prompts:
            if self.shots < 1:
                raise ValueError("normal prompt images need shots >= 1 (shots=0 is zero-shot)")
            source = self._sources[dataset]
            pool = self._prompt_pool(source, cls_name)
            split = pool[0]["split"]
            if split != "train":
                log.info("%s/%s has no train split: few-shot prompts come from its test split's normal images",
                         dataset, cls_name)
            if view_id is None:
                chosen = draw_prompts(pool, self.shots, self.few_shot_seed)
                self._prompt_record["prompts"].setdefault(dataset, {})[cls_name] = [sample_id(r) for r in chosen]
            else:
                views = self._view_prompts(dataset, cls_name, pool)
                if view_id not in views:
                    raise DatasetError(
                        f"few-shot prompts of {dataset}/{cls_name} are drawn per view, but view {view_id!r} has no "
                        f"normal {split} image (views with prompts: {sorted(views)}); complete the split files "
                        "or run it with shots=0")
                chosen = views[view_id]
            loader = self._dataset_for_loading(source)
            self._prompts[key] = torch.stack([loader.image_tensor(row) for row in chosen])
            self._prompt_record["splits"].setdefault(dataset, {})[cls_name] = split
            self._write_prompt_record()
        return self._prompts[key]

    def _view_prompts(self, dataset: str, cls_name: str, pool: list[SampleRow]) -> dict[str, list[SampleRow]]:
        """The class's draws of every view (drawn once, recorded and listed when first asked for)."""
        drawn = self._view_draws.setdefault(dataset, {})
        if cls_name not in drawn:
            drawn[cls_name] = draw_view_prompts(view_prompt_pools(pool, cls_name, dataset), self.shots,
                                                self.few_shot_seed)
            self._prompt_record.setdefault("view_prompts", {}).setdefault(dataset, {})[cls_name] = {
                view: [sample_id(r) for r in rows] for view, rows in drawn[cls_name].items()}
            if self.output_dir is not None:
                write_prompt_list(self.output_dir / f"{dataset}_{self.shots}shot_seed{self.few_shot_seed}_prompts.txt",
                                  dict(sorted(drawn.items())))
        return drawn[cls_name]

    def prompt_sample_ids(self, dataset: str, cls_name: str) -> list[str]:
        """sample_id of each normal prompt image of the class at the current shots and seed (drawn if needed);
        for a multi-view class, those of every view."""
        pool = self._prompt_pool(self._sources[dataset], cls_name)
        if all(r.get("view_id") for r in pool):
            return [sample_id(r) for rows in self._view_prompts(dataset, cls_name, pool).values() for r in rows]
        self.normal_prompt_images(dataset, cls_name)
        return list(self._prompt_record["prompts"][dataset][cls_name])

    def set_few_shot(self, shots: int, seed: int) -> None:
        """Switch to another shot count / prompt draw (one trained model tested at several k)."""
        self.shots, self.few_shot_seed = int(shots), int(seed)
        self._prompts.clear()
        self._view_draws.clear()
        self._prompt_record = {"prompts": {}, "splits": {}}

    def _write_prompt_record(self) -> None:
        if self.output_dir is None:
            log.debug("no output directory: few-shot prompt paths not written")
            return
        path = self.output_dir / f"few_shot_prompts_shots{self.shots}_seed{self.few_shot_seed}.json"
        write_prompt_record(path, {"shots": self.shots, "seed": self.few_shot_seed, **self._prompt_record})

    # -- building ---------------------------------------------------------------------------------------
    def _dataset(self, source: DatasetSource, split: str, training: bool) -> AnomalyDataset:
        rows = self._rows(source, split)
        mask_rule = str(source.cfg.get("mask_rule", "auto"))
        pixel_labels = self._pixel_labels(source)
        classes = list(dict.fromkeys(r["cls_name"] for r in rows))
        normal_rows = None
        if training and self.pair_normal:
            normal_rows = {c: self._prompt_pool(source, c) for c in classes}
        return AnomalyDataset(
            rows,
            dataset=source.name,
            transform=self.train_transform if training else self.eval_transform,
            prompt_names={c: prompt_name(source.cfg, c) for c in classes},
            pixel_labels=pixel_labels,
            mask_rule=mask_rule,
            mosaic_p=self.mosaic_p if training and source.name in self.mosaic_datasets else 0.0,
            normal_rows=normal_rows,
            normal_transform=self.eval_transform,
        )

    def _dataset_for_loading(self, source: DatasetSource) -> AnomalyDataset:
        return AnomalyDataset([], dataset=source.name, transform=self.eval_transform, prompt_names={},
                              pixel_labels=self._pixel_labels(source),
                              mask_rule=str(source.cfg.get("mask_rule", "auto")))

    def _pixel_labels(self, source: DatasetSource) -> bool:
        return has_pixel_labels(source.cfg, self.table(source.name))

    def _loader(self, dataset, batch_size: int, shuffle: bool) -> DataLoader:
        sampler = epoch_sampler(dataset, shuffle=shuffle, seed=self.seed)
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle if sampler is None else None,
            sampler=sampler,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
            collate_fn=collate_batch,
        )


def epoch_sampler(dataset, shuffle: bool, seed: int) -> Sampler | None:
    """Samplers whose order depends only on (seed, epoch, rank), so a resumed run replays the same batches.

    Training always uses torch's DistributedSampler (one replica without DDP): Lightning calls its
    set_epoch, so epoch e has the same order whether or not the run was interrupted before it.
    Evaluation under DDP is sharded without padding (the ddp trainer configs set
    use_distributed_sampler=false): DistributedSampler would repeat images to even out the ranks, and
    repeated images would change the metrics. Ranks may get one batch less; the loop has no per-step
    collective.
    """
    distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
    if shuffle:
        if distributed:
            return DistributedSampler(dataset, shuffle=True, seed=seed)
        return DistributedSampler(dataset, num_replicas=1, rank=0, shuffle=True, seed=seed)
    if distributed:
        return UnpaddedShardSampler(len(dataset), dist.get_rank(), dist.get_world_size())
    return None


class UnpaddedShardSampler(Sampler[int]):
    """Every world_size-th index starting at rank: each sample is seen by exactly one rank."""

    def __init__(self, length: int, rank: int, world_size: int) -> None:
        self.indices = list(range(rank, length, world_size))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def _names(value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]


def _aux_rule(cfg: DictConfig, target: str) -> DictConfig:
    """The model's reference training choice for this target: aux_data.by_target[target] or aux_data.default."""
    aux = OmegaConf.select(cfg, "model.aux_data", default=None)
    if aux is None:
        return OmegaConf.create({})
    by_target = aux.get("by_target") or {}
    return by_target.get(target) or aux.get("default") or OmegaConf.create({})


def _with_run_options(node: DictConfig, data: DictConfig, name: str) -> DictConfig:
    """A training/validation dataset's node with the run options and its data.train_classes entry."""
    overrides = {key: data.get(key) for key in RUN_OPTIONS if key in data}
    chosen = (data.get("train_classes") or {}).get(name)
    if chosen is not None:
        overrides["classes"] = chosen
    # classes_option: the key the error messages of clipad.data.scanners.selection tell the user to set.
    overrides["classes_option"] = "data.train_classes"
    return OmegaConf.merge(node, overrides)


def _output_dir(cfg: DictConfig) -> Path | None:
    try:
        value = OmegaConf.select(cfg, "paths.output_dir", default=None)
    except (OmegaConfBaseException, ValueError) as error:  # ${hydra:runtime.output_dir} outside a Hydra run
        log.debug("paths.output_dir cannot be resolved (%s)", error)
        return None
    return None if value in (None, "") else Path(str(value)).expanduser()
