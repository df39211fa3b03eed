"""Adam that gives each member of a population the step it would get alone, bit for bit, on a CPU.

A population's parameter tensor holds every member's block one after the other (leading dimension S).
PyTorch's fused CPU Adam runs a tensor's elements in SIMD vectors and the last ``numel % width`` of them
in scalar code that rounds differently (it computes in double where the vectors compute in float). Whether
a member's elements fall in the vectors or in that tail depends on how many members the tensor holds, so a
seed trained alone and the same seed inside a population drift apart in the last bits (measured on the
``deramo-gym`` arms: the 15 head biases of a five-task member, 3 actions each, are all in the tail alone
and all in the vectors beside a second member).

:class:`MemberwiseAdam` keeps the fused kernel for every tensor whose per-member block is a whole number of
vectors (the whole tensor then runs in vectors, and each element's arithmetic is the same whatever its
position) and steps the others, biases and small heads, with the multi-tensor ``foreach`` kernels, whose
elementwise operations round the same in vectors and in scalar code. A tensor's kernel depends only on its
per-member shape, never on the number of members, so a member's step is the same alone and in any population.
"""

from __future__ import annotations

import torch

VECTOR_FLOATS = 16
"""A multiple of every float32 SIMD width of PyTorch's CPU kernels (AVX-512 16, AVX2 and SVE256 8, NEON 4)."""


def whole_vectors(param: torch.Tensor, n_members: int) -> bool:
    """Whether each member's block of ``param`` (leading dimension ``n_members``) is whole SIMD vectors."""
    return (param.numel() // n_members) % VECTOR_FLOATS == 0


class MemberwiseAdam(torch.optim.Adam):
    """Fused Adam for the parameters whose member blocks are whole vectors, ``foreach`` Adam for the rest.

    The parameter groups (and so ``state_dict``) are those given, as for ``torch.optim.Adam(fused=True)``:
    the split is made anew at each step, from each parameter's per-member size."""

    def __init__(self, params, n_members: int, lr: float, eps: float) -> None:
        super().__init__(params, lr=lr, eps=eps, fused=True)
        self.n_members = n_members

    @torch.no_grad()
    def step(self, closure=None):
        groups = self.param_groups
        self.param_groups = [part for group in groups for part in self._kernel_groups(group)]
        try:
            return super().step(closure)
        finally:
            self.param_groups = groups

    def _kernel_groups(self, group: dict) -> list[dict]:
        whole = [p for p in group["params"] if whole_vectors(p, self.n_members)]
        rest = [p for p in group["params"] if not whole_vectors(p, self.n_members)]
        parts = [{**group, "params": whole}] if whole else []
        if rest:
            parts.append({**group, "params": rest, "fused": False, "foreach": True})
        return parts
