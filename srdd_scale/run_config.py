"""RunConfig: every package's config in one frozen object, resolved once and saved with the run."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

from srdd_scale.config import ConfigError, load_config
from srdd_scale.data.config import DataConfig
from srdd_scale.model.config import ModelConfig
from srdd_scale.text.config import TextConfig
from srdd_scale.tokenizer.config import TokenizerConfig
from srdd_scale.train.config import LoggingConfig, ParallelConfig, TrainConfig


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Everything one training run needs; saved as config.yaml in the run directory."""

    data: DataConfig = dataclasses.field(default_factory=DataConfig)  # MDS shards to stream
    tokenizer: TokenizerConfig = dataclasses.field(default_factory=TokenizerConfig)  # image VQ tokenizer
    text: TextConfig = dataclasses.field(default_factory=TextConfig)  # caption tokenizer + frozen encoder
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)  # SRDD transformer
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)  # optimisation, steps, checkpoints
    parallel: ParallelConfig = dataclasses.field(default_factory=ParallelConfig)  # ddp | fsdp | deepspeed
    logging: LoggingConfig = dataclasses.field(default_factory=LoggingConfig)  # run dir, wandb, intervals

    @classmethod
    def load(cls, yaml_paths: Sequence[str | Path] = (), overrides: Sequence[str] = ()) -> "RunConfig":
        """YAML files (merged in order) + ``key=value`` overrides -> a validated RunConfig."""
        return load_config(yaml_paths, overrides, cls)

    def validate(self) -> None:
        for field in dataclasses.fields(self):
            getattr(self, field.name).validate()
        latent = self.tokenizer.image_size // self.tokenizer.downsample
        if self.tokenizer.patch_nums[-1] != latent:
            raise ConfigError(
                f"tokenizer.patch_nums: the last scale is {self.tokenizer.patch_nums[-1]}, expected the latent "
                f"size image_size // downsample = {latent}"
            )
