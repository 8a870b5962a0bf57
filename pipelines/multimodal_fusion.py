"""The crossfuse DAG: validate -> preprocess -> extract -> train -> evaluate -> register.

The single parameter ``config_json`` is a serialised :class:`crossfuse.config.RunConfig`;
every stage reads the same one. The first stage creates the MLflow run and the
others write into it, so one pipeline run is one MLflow run.

What a cluster needs to know before the run — each step's CPU, memory, accelerator,
retries, node selector and tolerations, the Secrets exposed as environment variables,
and KFP caching — is fixed when the pipeline is built, from the ``pipeline`` section of
the config (:func:`build_pipeline`). Placement and Secrets go into the IR's
Kubernetes platform spec (``kfp-kubernetes``).
"""

from kfp import dsl, kubernetes

from components import (
    close_run,
    evaluate,
    extract,
    merge_features,
    preprocess,
    register,
    train,
    validate,
)
from crossfuse.config import PipelineConfig, RunConfig, StageResources

PIPELINE_NAME = "crossfuse-multimodal-fusion"


def apply_resources(task: dsl.PipelineTask, res: StageResources | None,
                    pipeline: PipelineConfig) -> None:
    """Set one step's Kubernetes resources, placement, retries, secrets and caching."""
    task.set_caching_options(pipeline.caching)
    for secret, keys in sorted(pipeline.secret_env.items()):
        kubernetes.use_secret_as_env(task, secret, secret_key_to_env=keys)
    if res is None:
        return
    for value, setter in ((res.cpu_request, task.set_cpu_request),
                          (res.cpu_limit, task.set_cpu_limit),
                          (res.memory_request, task.set_memory_request),
                          (res.memory_limit, task.set_memory_limit)):
        if value:
            setter(value)
    if res.accelerator_type:
        task.set_accelerator_type(res.accelerator_type)
        task.set_accelerator_limit(res.accelerator_limit or 1)
    if res.retries:
        task.set_retry(num_retries=res.retries, backoff_duration=f"{res.retry_backoff_seconds}s")
    for label, value in sorted(res.node_selector.items()):
        kubernetes.add_node_selector(task, label_key=label, label_value=value)
    for t in res.tolerations:
        kubernetes.add_toleration(task, key=t.key, operator=t.operator, value=t.value,
                                  effect=t.effect)


def fan_out_extract(cfg: RunConfig, config_json, dataset) -> dsl.Collected:
    """Extraction over ``pipeline.extract_parts`` pods, each encoding every parts-th row of
    ``dataset``; the partial feature sets, collected."""
    parts = cfg.pipeline.extract_parts
    with dsl.ParallelFor(items=list(range(parts)), name="extract-parts") as part:
        shard = extract(config_json=config_json, part=part, parts=parts, dataset=dataset)
        apply_resources(shard, cfg.pipeline.resources.get("extract"), cfg.pipeline)
    return dsl.Collected(shard.outputs["features"])


def build_pipeline(cfg: RunConfig | None = None):
    """The DAG with ``cfg.pipeline``'s resources; ``config_json`` defaults to ``cfg``."""
    cfg = cfg or RunConfig()

    @dsl.pipeline(name=PIPELINE_NAME,
                  description="Validate, preprocess, encode, fuse, evaluate and register a "
                              "multimodal classifier.")
    def multimodal_fusion(config_json: str = cfg.to_json(), run_token: str = ""):
        # Ends the MLflow run FAILED if any task fails or is killed (a killed task cannot).
        # KFP allows no pipeline outputs from inside an exit handler: the registration is
        # read from the MLflow run (tagged with run_token) instead.
        closing = close_run(config_json=config_json, kfp_run=dsl.PIPELINE_JOB_ID_PLACEHOLDER)
        apply_resources(closing, None, cfg.pipeline)
        with dsl.ExitHandler(closing, name="pipeline"):
            _stages(cfg, config_json, run_token)

    return multimodal_fusion


def train_reads_items(cfg: RunConfig) -> bool:
    """Whether the train task gets the preprocessed items: when it fine-tunes the encoders
    (``fusion.finetune``), or auto may (``fusion.auto.finetune`` on, or null with a GPU
    requested for the train step).

    >>> train_reads_items(RunConfig())
    False
    """
    if cfg.fusion.finetune != "none":
        return True
    wanted = cfg.fusion.auto.finetune
    if wanted is None:
        resources = cfg.pipeline.resources.get("train")
        wanted = bool(resources and resources.accelerator_limit)
    return cfg.fusion.method == "auto" and wanted


def _stages(cfg: RunConfig, config_json, run_token) -> None:
    """The DAG's stages, inside the exit handler."""
    validated = validate(config_json=config_json, kfp_run=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                         run_token=run_token).set_display_name("validate")
    run_id = validated.outputs["Output"]
    prepared = preprocess(config_json=config_json, run_id=run_id,
                          validation=validated.outputs["validation"])
    if cfg.pipeline.extract_parts == 1:  # one pod: its feature set is the run's, no merge
        encoded = extract(config_json=config_json, part=0, parts=1,
                          dataset=prepared.outputs["dataset"])
        merge_name = "extract"
    else:
        encoded = merge_features(config_json=config_json, run_id=run_id,
                                 parts=fan_out_extract(cfg, config_json, prepared.outputs["dataset"]))
        merge_name = "merge_features"
    # Fine-tuning reads the preprocessed items; a frozen-encoder train reads vectors only.
    items = {"dataset": prepared.outputs["dataset"]} if train_reads_items(cfg) else {}
    trained = train(config_json=config_json, run_id=run_id,
                    features=encoded.outputs["features"], **items)
    evaluated = evaluate(config_json=config_json, run_id=run_id,
                         dataset=prepared.outputs["dataset"],
                         features=encoded.outputs["features"], model=trained.outputs["model"])
    registered = register(config_json=config_json, run_id=run_id,
                          model=trained.outputs["model"],
                          evaluation=evaluated.outputs["evaluation"])
    for name, task in (("validate", validated), ("preprocess", prepared),
                       (merge_name, encoded), ("train", trained),
                       ("evaluate", evaluated), ("register", registered)):
        apply_resources(task, cfg.pipeline.resources.get(name), cfg.pipeline)



def __getattr__(name: str):
    """``multimodal_fusion``, the DAG with the default config, built when first asked for (building
    takes seconds that a process which only runs or compiles another DAG need not pay)."""
    if name == "multimodal_fusion":
        return build_pipeline()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
