"""SRDD transformer: VAR's next-scale predictor with a Markovian attention mask (docs/method.md §3, §4)."""
from srdd_scale.model.config import ModelConfig, SamplingConfig
from srdd_scale.model.transformer import SRDDTransformer, build_model, state_dict_for_schedule

__all__ = ["ModelConfig", "SamplingConfig", "SRDDTransformer", "build_model", "state_dict_for_schedule"]
