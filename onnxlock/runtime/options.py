"""Session and provider options: refuse what would write the restored model (or anything compiled
or profiled from it) to disk, and copy the rest into options the loader can fill."""

from __future__ import annotations

import os

import onnxruntime as ort

from ..errors import UnsafeOptionError

# session config entries that write the model, a compiled context, its weights or its per-node
# sizes to disk. Each is read by a lookup that costs ~0.1 ms when unset (onnxruntime raises), so
# entries that only act together with a refused one are not read: ``ep.context_file_path`` and
# ``ep.context_model_external_initializers_file_name`` name what ``ep.context_enable`` writes;
# ``session.save_model_format``, ``session.optimized_model_external_initializers_file_name`` and
# ``session.save_external_prepacked_constant_initializers`` shape what ``optimized_model_filepath``
# writes (onnxruntime logs "the model is not being saved. Ignoring the flag" without it).
# ``session.moe.offload.derived_cache_dir`` is refused by its name (not observed: no MoE model here)
UNSAFE_CONFIG_ENTRIES = ("ep.context_enable", "session.debug_layout_transformation",
                         "session.collect_node_memory_stats_to_file", "session.moe.offload.derived_cache_dir")
# onnxruntime's Python API reads session options from a model's ``ort_config`` metadata when this
# is "1": a locked file given an ``ort_config`` would switch on profiling (checked only after the
# session is built, when the restored graph's profile is already due to be written)
CONFIG_FROM_MODEL_ENV = "ORT_LOAD_CONFIG_FROM_MODEL"
# entries carried over to the loader's own SessionOptions when set (for a model of INLINE_BYTES
# and more: a smaller one gets the caller's object itself). onnxruntime has no call that lists a
# SessionOptions' entries, and each unset one read costs ~0.1 ms, so these are the entries of
# onnxruntime 1.32 that change what a session computes, how fast, or on which threads; the others
# (ORT-format loading, saving, MoE offload, EP partitioning) are not carried
CARRIED_CONFIG_ENTRIES = (
    "session.disable_prepacking", "session.use_env_allocators", "session.set_denormal_as_zero",
    "session.intra_op.allow_spinning", "session.inter_op.allow_spinning", "session.intra_op_thread_affinities",
    "session.intra_op.spin_duration_us", "session.inter_op.spin_duration_us",
    "session.intra_op.spin_backoff_max", "session.inter_op.spin_backoff_max",
    "session.disable_cpu_ep_fallback", "session.use_device_allocator_for_initializers",
    "session.disable_aot_function_inlining", "optimization.disable_specified_optimizers",
    "optimization.enable_gelu_approximation", "optimization.enable_cast_chain_elimination",
    "optimization.constant_folding_max_output_size_in_bytes", "session.graph_optimizations_loop_level",
    "session.dynamic_block_base", "session.force_spinning_stop", "session.strict_shape_type_inference",
    "session.allow_released_opsets_only", "session.disable_quant_qdq", "session.enable_quant_qdq_cleanup",
    "session.disable_double_qdq_remover", "session.disable_qdq_constant_folding",
    "session.qdqisint8allowed", "session.x64quantprecision", "session.qdq_matmulnbits_accuracy_level",
    "session.qdq_matmulnbits_block_size", "session.enable_dq_matmulnbits_fusion",
    "mlas.enable_gemm_fastmath_arm64_bfloat16", "mlas.disable_kleidiai", "mlas.use_lut_gemm",
    "session.prepack.enable_parallel", "session.external_data_loader.threads",
    "session.external_data_loader.chunk_bytes", "session.external_data_loader.min_size_bytes",
    "session.external_data_loader.pinned_memory_bytes",
    "session.record_ep_graph_assignment_info", "session.disable_model_compile",
)
CARRIED_ATTRIBUTES = ("intra_op_num_threads", "inter_op_num_threads", "graph_optimization_level", "execution_mode",
                      "execution_order", "enable_cpu_mem_arena", "enable_mem_pattern", "enable_mem_reuse",
                      "log_severity_level", "log_verbosity_level", "logid", "use_deterministic_compute",
                      "use_per_session_threads")
# a provider option naming one of these, set to anything but off, writes files
# (TensorRT engine/timing caches and context dumps, OpenVINO cache_dir, QNN context cache,
# MIGraphX saved models, CoreML model cache, profiling outputs)
_WRITING_WORDS = ("cache", "dump", "save", "context", "profiling", "_path", "dir", "file")
_OFF = ("", "0", "false", "off", "none")


def _config_entry(options: ort.SessionOptions, key: str) -> str:
    """A session config entry, '' when unset (onnxruntime raises for a missing key)."""
    try:
        return options.get_session_config_entry(key)
    except RuntimeError:
        return ""


def check_safe(options: ort.SessionOptions | None, providers: list) -> None:
    """Refuse options that would write the restored model, an engine compiled from it, its profile or
    shapes; all but the config entries (``check_entries``: the loader reads those beside the KDF)."""
    if os.environ.get(CONFIG_FROM_MODEL_ENV) == "1":  # exactly what onnxruntime tests
        raise UnsafeOptionError(f"{CONFIG_FROM_MODEL_ENV}=1 lets a model's metadata set session options "
                                "(profiling, saving the optimized model): unset it to load a locked model")
    if options is not None:
        if options.optimized_model_filepath:
            raise UnsafeOptionError("SessionOptions.optimized_model_filepath would write the restored model to disk")
        if options.enable_profiling:
            raise UnsafeOptionError("SessionOptions.enable_profiling would write the restored graph's "
                                    "node names and shapes to disk")
        if options.has_providers():
            raise UnsafeOptionError("providers added to SessionOptions cannot be checked; pass them as providers=")
    for provider in providers:
        settings = provider[1] if isinstance(provider, tuple) else {}
        for name, value in settings.items():
            if any(word in name.lower() for word in _WRITING_WORDS) and str(value).strip().lower() not in _OFF:
                raise UnsafeOptionError(f"provider option '{name}' would write a compiled model or its data to disk")


def check_entries(options: ort.SessionOptions | None) -> None:
    """Refuse the session config entries that would write the restored model or its sizes to disk."""
    if options is None:
        return
    for entry in UNSAFE_CONFIG_ENTRIES:
        if _config_entry(options, entry).lower() not in _OFF:
            raise UnsafeOptionError(f"session config '{entry}' would write the restored model to disk")


def copy_options(options: ort.SessionOptions | None) -> ort.SessionOptions:
    """A fresh SessionOptions with the caller's settings (the attributes and the config entries
    listed above): the loader adds weights to it and never touches the caller's object."""
    copy = ort.SessionOptions()
    if options is None:
        return copy
    for name in CARRIED_ATTRIBUTES:
        setattr(copy, name, getattr(options, name))
    for entry in CARRIED_CONFIG_ENTRIES:
        value = _config_entry(options, entry)
        if value:
            copy.add_session_config_entry(entry, value)
    return copy
