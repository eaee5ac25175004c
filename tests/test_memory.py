"""CPU memory placement in the trainer: optimizer state made up front, no loss kept past its micro-step."""

from __future__ import annotations

import weakref

import pytest
import torch
import yaml

from training.config import load_train_config
from training.trainer import Trainer, allocate_adam_state


def _two_groups(seed: int) -> tuple[torch.nn.ModuleDict, list[dict]]:
    torch.manual_seed(seed)
    model = torch.nn.ModuleDict({"connector": torch.nn.Linear(5, 3), "lora": torch.nn.Linear(3, 2, bias=False)})
    return model, [{"params": list(model["connector"].parameters()), "lr": 0.05}, {"params": list(model["lora"].parameters())}]


@pytest.mark.parametrize("amsgrad", [False, True])
def test_allocated_adam_state_trains_exactly_like_lazy_state(amsgrad):
    runs = []
    for allocate in (False, True):
        model, groups = _two_groups(seed=3)
        optimizer = torch.optim.AdamW(groups, lr=0.01, weight_decay=0.1, amsgrad=amsgrad)
        if allocate:
            assert allocate_adam_state(optimizer)
        torch.manual_seed(4)
        for step in range(4):
            features = torch.randn(6, 5)  # (B, D_in)
            hidden = model["connector"](features)  # (B, 3)
            # Step 0 leaves the connector without gradients, as a text-only batch does: lazy AdamW creates
            # its state a step later, and state made up front must not move the connector either.
            loss = model["lora"](hidden.detach() if step == 0 else hidden).pow(2).mean()
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        runs.append((model.state_dict(), optimizer.state_dict()["state"]))
    (lazy_weights, lazy_state), (early_weights, early_state) = runs
    assert all(torch.equal(lazy_weights[name], early_weights[name]) for name in lazy_weights)
    assert lazy_state.keys() == early_state.keys()
    for index, moments in lazy_state.items():
        assert moments.keys() == early_state[index].keys()
        assert all(torch.equal(moments[key], early_state[index][key]) for key in moments)


def test_allocate_adam_state_leaves_loaded_state_and_other_optimizers_alone():
    model, groups = _two_groups(seed=0)
    optimizer = torch.optim.AdamW(groups, lr=0.01)
    model["lora"](model["connector"](torch.randn(2, 5))).sum().backward()
    optimizer.step()
    before = {index: {k: v.clone() for k, v in moments.items()} for index, moments in optimizer.state_dict()["state"].items()}
    assert not allocate_adam_state(optimizer)  # e.g. resumed from a checkpoint: keep its moments and step counts
    after = optimizer.state_dict()["state"]
    assert all(torch.equal(before[i][k], after[i][k]) for i in before for k in before[i])
    assert not allocate_adam_state(torch.optim.SGD(model.parameters(), lr=0.1))


def test_no_loss_outlives_its_micro_step(tmp_path, tiny_paths, monkeypatch):
    """A loss alive into the next forward keeps its whole autograd graph there (heap growth on CPU)."""
    from training.data.scenes import main as scenes_main

    scenes_main(["--out", str(tmp_path / "scenes"), "--train", "2", "--val", "0", "--test", "0", "--seed", "1"])
    config = {
        "output_dir": str(tmp_path / "run"),
        "model": {
            "llm": {"model": tiny_paths["llm"], "lora": {"r": 4}},
            "modalities": {"image": {"encoder": {"kind": "hf_vision", "model": tiny_paths["clip"]}, "connector": {"kind": "mlp"}}},
        },
        "data": {"train_file": str(tmp_path / "scenes" / "train.jsonl"), "max_length": 400},
        "optim": {"max_steps": 3, "batch_size": 2, "grad_accum": 2, "warmup_steps": 1},
        "checkpoint": {"save_every": 0},
        "eval": {"eval_every": 0, "metric": "none"},
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    losses: list[weakref.ref] = []
    alive_at_forward: list[bool] = []
    original = Trainer._loss

    def tracked(self, model, batch):
        alive_at_forward.append(any(ref() is not None for ref in losses))
        loss = original(self, model, batch)
        losses.append(weakref.ref(loss))
        return loss

    monkeypatch.setattr(Trainer, "_loss", tracked)
    Trainer(load_train_config(["--config", str(path)])).train()
    assert len(alive_at_forward) == 6 and not any(alive_at_forward)
