"""Hydra entry point: fit, then test the best checkpoint.  `python -m glamor_lightning.train [overrides]`

Torch and Lightning are imported inside `train`, after the user's paths are checked (`preflight`), so a
wrong path is reported in a second rather than after the 8-10 s of imports.
"""

from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig, OmegaConf

from glamor_lightning.data.index import check_data_root
from glamor_lightning.errors import UserError
from glamor_lightning.hydra_utils import CONF_DIR, format_metrics
from glamor_lightning.preflight import check_checkpoint_path, report_user_errors

log = logging.getLogger(__name__)


def preflight(cfg: DictConfig) -> None:
    """The data root and a resume checkpoint must exist (checked before the slow imports)."""
    check_data_root(cfg.data.root)
    if cfg.get("ckpt_path"):
        check_checkpoint_path(cfg.ckpt_path)
    if cfg.get("init_from"):
        check_checkpoint_path(cfg.init_from, "init_from")
    check_recipe(cfg)
    if cfg.get("ckpt_path") and cfg.get("init_from"):
        raise UserError(
            "ckpt_path resumes a run (weights, optimiser, epoch) and init_from starts a new one from weights: "
            "set one of them"
        )


def check_recipe(cfg: DictConfig) -> None:
    """The training recipe (`recipe=`, conf/recipe/) must suit the model: a recipe states the model settings
    it is for (`recipe.requires`), and another model is refused here with what to set, rather than deep in
    the model with a message about one of the recipe's options."""
    recipe = cfg.get("recipe") or {}
    wrong = {k: v for k, v in (recipe.get("requires") or {}).items() if cfg.model.get(k) != v}
    if wrong:
        needs = ", ".join(f"model.{k}={v}" for k, v in recipe.requires.items())
        has = ", ".join(f"model.{k}={cfg.model.get(k)}" for k in wrong)
        raise UserError(
            f"recipe={recipe.name} trains a model with {needs}; this one has {has}: "
            "add recipe=plain (no remedies), or set the model back"
        )


#: model settings a resumed run may change: how it executes, or how a fresh model starts (the checkpoint's
#: weights replace those), not what it trains
RESUME_FREE = frozenset(
    {"channels_last", "compile", "fused_sgd", "fused_bn_pool_relu", "pretrained", "pretrained_path"}
)


def check_resume(cfg: DictConfig, checkpoint: dict, hparams: dict) -> None:
    """A resumed run (`ckpt_path`) goes on with the model settings its checkpoint was trained with: any model
    hyper-parameter that differs is refused, naming each, rather than failing in Lightning's state-dict load
    (auxiliary heads) or silently training on with another recipe. A run from before `recipe=context` became the
    default (2026-12-01) resumes with `recipe=plain`."""
    saved = checkpoint.get("hyper_parameters") or {}
    differ = {k: (saved[k], v) for k, v in hparams.items() if k in saved and k not in RESUME_FREE and saved[k] != v}
    if differ:
        diffs = "; ".join(f"model.{k}: checkpoint {a!r}, this run {b!r}" for k, (a, b) in sorted(differ.items()))
        plain = not saved.get("aux_heads") and not saved.get("fusion_floor") and not saved.get("lr_scale")
        hint = (
            " (it was trained with the plain recipe: add recipe=plain)" if plain and cfg.recipe.name != "plain" else ""
        )
        raise UserError(
            f"ckpt_path={cfg.ckpt_path} resumes a run with other model settings{hint}: {diffs}. "
            "Resume with the settings it was trained with (init_from=... starts a new run from its weights)"
        )


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit the model described by `cfg`, then test the best checkpoint; return all metrics."""
    preflight(cfg)
    import lightning as L
    import torch
    from hydra.utils import instantiate
    from lightning.pytorch.callbacks import WeightAveraging

    from glamor_lightning.callbacks.allocator import enabled_in as keeps_memory
    from glamor_lightning.checkpoints import load_net_weights, read_checkpoint
    from glamor_lightning.hydra_utils import callbacks, finish_loggers, loggers
    from glamor_lightning.precision_choice import AUTO, auto_precision, checkpoint_precision
    from glamor_lightning.quiet import quiet_third_party_notes

    # a clear error for a file that is no safe checkpoint, before any work
    resumed = read_checkpoint(cfg.ckpt_path) if cfg.get("ckpt_path") else None
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    if cfg.get("matmul_precision"):
        torch.set_float32_matmul_precision(cfg.matmul_precision)
    model = instantiate(cfg.model)
    if cfg.get("init_from"):
        fresh = load_net_weights(model, cfg.init_from)
        log.info("Net weights from %s%s", cfg.init_from, f" ({', '.join(fresh)} fresh)" if fresh else "")
    if resumed is not None:
        check_resume(cfg, resumed, dict(model.hparams))
    datamodule = instantiate(cfg.data)
    model.bind_data(datamodule)
    if cfg.trainer.get("precision") == AUTO:  # what the saved config records is the precision chosen
        if resumed is not None:  # a resumed run goes on in the precision it started in
            cfg.trainer.precision = checkpoint_precision(resumed)
            log.info("trainer.precision=auto -> %s (the precision of the run resumed)", cfg.trainer.precision)
        else:
            choice = auto_precision(cfg.trainer, model, datamodule, keep_memory=keeps_memory(cfg))
            log.info(choice.describe())
            cfg.trainer.precision = choice.precision
    resumed = None  # Lightning reads the checkpoint again to resume: free this copy
    quiet_third_party_notes()
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks(cfg), logger=loggers(cfg))
    config = {
        k: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v
        for k, v in cfg.items()
        if k != "hydra"
    }
    for lg in trainer.loggers:
        lg.log_hyperparams({"config": config})
    try:
        # a resumed run reads its checkpoint with the weights-only unpickler (no code in the file runs)
        trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"), weights_only=True)
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        if cfg.get("test", True) and not trainer.fast_dev_run:
            best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
            if not best:
                log.warning("No best checkpoint was saved: testing the current weights.")
            # with weight averaging (e.g. `+callbacks.ema={_target_: lightning.pytorch.callbacks.EMAWeightAveraging}`)
            # a checkpoint's state_dict holds the averaged weights, the ones validation chose it by, but the callback
            # puts the trained weights back when it is loaded: test without it, so the test scores what was chosen
            trainer.callbacks = [cb for cb in trainer.callbacks if not isinstance(cb, WeightAveraging)]
            trainer.test(model, datamodule=datamodule, ckpt_path=best or None, weights_only=True)
            metrics.update({k: float(v) for k, v in trainer.callback_metrics.items()})
            if trainer.is_global_zero:
                print(
                    f"\nBest checkpoint: {best or '(none)'}\nTest metrics of the best checkpoint:\n"
                    f"{format_metrics({k: v for k, v in metrics.items() if k.startswith('test/')})}"
                )
    finally:
        finish_loggers(trainer)  # a multirun's next job must not log into this job's W&B run
    return metrics


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
def main(cfg: DictConfig) -> float | None:
    metrics = report_user_errors("glamor train", lambda: train(cfg))
    # what a Hydra sweeper (e.g. Optuna) optimises: the value this function returns
    return metrics.get(cfg.get("optimized_metric", "val/acc_best"))


if __name__ == "__main__":
    main()
