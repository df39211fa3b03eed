"""The control Q-network's forward and backward pass written out, for the float32 learner on a CPU.

Why not autograd: PyTorch's CPU build runs float32 matmuls through MKL, which takes a slow code path on AMD
processors; numpy's OpenBLAS runs the update's ``(S, T*B, 80) x (80, 80)`` products about twice as fast
there (``python benchmarks/bench_update.py --kernels numpy torch``). Writing the backward out also keeps
every intermediate in a buffer allocated once. The elementwise work stays in PyTorch (in place, on the same
memory), and the optimizer is the learner's own PyTorch optimizer fed the gradients computed here.

For layer i with input ``x_i``, weights ``W_i`` ``(out, in)``, bias ``b_i`` and activation ``f_i``:

    forward:   h_i = f_i(x_i W_i^T + b_i)
    backward:  d_i = g_i * f_i'(h_i)                  g_i = dL/dh_i; f' written with the output h_i
               dL/dW_i = d_i^T x_i,   dL/db_i = sum of d_i over the rows
               g_{i-1} = d_i W_i

A shared layer sees the rows of all T tasks of a member as one ``(T*B, in)`` matrix, a task layer one
``(B, in)`` matrix per (member, task): the same batching as :class:`mtdqn.nets.MultiTaskQNetwork`, no loop
over tasks or members. Padded input columns are zero, so their weights get zero gradient, as with autograd.

Threads: OpenBLAS rounds a product differently when it splits it over threads, so each product runs on one
BLAS thread; with ``torch.get_num_threads()`` > 1 the members are cut into that many contiguous slices whose
products run at once (numpy releases the GIL). Every member's product is the same call either way, so the
numbers do not depend on the thread count.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from mtdqn.nets import MultiTaskQNetwork
from mtdqn.task_balance import feature_norm_scales

_ACTIVATE = {
    "relu": torch.Tensor.relu_,
    "sigmoid": torch.Tensor.sigmoid_,
    "tanh": torch.Tensor.tanh_,
    "identity": lambda x: x,
}


def _activation_backward(g: torch.Tensor, h: torch.Tensor, activation: str) -> None:
    """``g <- g * f'(h)`` in place, ``h`` being the activation's output."""
    if activation == "relu":
        torch.ops.aten.threshold_backward.grad_input(g, h, 0.0, grad_input=g)
    elif activation == "sigmoid":
        torch.ops.aten.sigmoid_backward.grad_input(g, h, grad_input=g)
    elif activation == "tanh":
        torch.ops.aten.tanh_backward.grad_input(g, h, grad_input=g)


class _MemberSlices:
    """``np.matmul(a, b, out=out)`` over arrays whose first axis is the member, cut into one slice of members
    per thread, the slices computed at once."""

    def __init__(self, n_members: int) -> None:
        self.n_members = n_members
        self.threads = 0
        self.bounds: list[tuple[int, int]] = []
        self.pool: ThreadPoolExecutor | None = None

    def matmul(self, a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
        threads = min(torch.get_num_threads(), self.n_members)
        if threads != self.threads:
            self._resize(threads)
        if self.pool is None:
            np.matmul(a, b, out=out)
            return
        (lo, hi), *rest = self.bounds
        pending = [self.pool.submit(np.matmul, a[i:j], b[i:j], out=out[i:j]) for i, j in rest]
        np.matmul(a[lo:hi], b[lo:hi], out=out[lo:hi])
        for future in pending:
            future.result()

    def _resize(self, threads: int) -> None:
        if self.pool is not None:
            self.pool.shutdown()
        edges = np.linspace(0, self.n_members, threads + 1).round().astype(int)
        self.bounds = list(zip(edges[:-1].tolist(), edges[1:].tolist(), strict=True))
        self.pool = ThreadPoolExecutor(threads - 1, "mtdqn-matmul") if threads > 1 else None
        self.threads = threads


class _Buffers:
    """A float32 tensor ``(S, T, B, out)`` per layer output and its numpy view (the same memory).

    With ``slots=2`` layers take turns in two blocks of memory (layer i overwrites layer i - 2), enough
    for a pass that needs only the layer below: less memory touched, more of it left in the CPU's caches.
    """

    def __init__(self, net: MultiTaskQNetwork, batch_size: int, slots: int | None = None) -> None:
        lead = (net.n_members, net.n_tasks, batch_size)
        rows = net.n_members * net.n_tasks * batch_size
        slots = slots or len(net.plan)
        width = max(layer.out_dim for layer in net.plan)
        blocks = [torch.empty(rows * width) for _ in range(slots)]
        self.tensors = [
            blocks[i % slots][: rows * layer.out_dim].view(*lead, layer.out_dim)
            for i, layer in enumerate(net.plan)
        ]
        self.arrays = [t.numpy() for t in self.tensors]


class ManualBackprop:
    """Forward passes of the online and target networks and the online network's backward, on the CPU.

    Parameters are read through numpy views of the live tensors (no copy; a target sync or an optimizer
    step is seen at once). :meth:`backward` writes ``dL/dW`` and ``dL/db`` into each trainable parameter's
    ``.grad`` (allocated once); a frozen parameter (``requires_grad`` False) gets ``.grad = None`` so the
    optimizer skips it, as after autograd.
    """

    def __init__(self, online: MultiTaskQNetwork, target: MultiTaskQNetwork, batch_size: int) -> None:
        if online.action_mask.device.type != "cpu":
            raise ValueError("ManualBackprop runs on the CPU only")
        self.net = online
        self.plan = online.plan
        self.online = _numpy_params(online)
        self.target = _numpy_params(target)
        self.bias_online = [b.detach() for b in online.biases]
        self.bias_target = [b.detach() for b in target.biases]
        params = [*online.weights, *online.biases]
        self._grads = {p: torch.zeros_like(p) for p in params}
        self._grad_arrays = {p: g.numpy() for p, g in self._grads.items()}
        self._slices = _MemberSlices(online.n_members)
        self._allocate(batch_size)

    def _allocate(self, batch_size: int) -> None:
        """Buffers for batches of ``batch_size`` samples per (member, task)."""
        self.shape = (self.net.n_members, self.net.n_tasks, batch_size)
        self.h = _Buffers(self.net, batch_size)  # online activations on obs, kept for the backward
        self.h_next = _Buffers(self.net, batch_size, slots=2)  # target activations on next_obs
        self.h_next_online = _Buffers(self.net, batch_size, slots=2)  # online, next_obs (Double DQN)
        self.grad_h = _Buffers(self.net, batch_size, slots=2)  # dL/dh_i
        self._passes = {  # which: (weights, biases, output buffers)
            "online": (self.online, self.bias_online, self.h),
            "target": (self.target, self.bias_target, self.h_next),
            "online_next": (self.online, self.bias_online, self.h_next_online),
        }

    def forward(self, obs: torch.Tensor, which: str = "online") -> torch.Tensor:
        """Q values ``(S, T, B, A_max)`` of ``obs``: ``online`` (kept for :meth:`backward`), ``target`` or
        ``online_next`` (the online network on next observations, for Double DQN)."""
        if obs.shape[2] != self.shape[2]:  # another batch size than the last: new buffers
            self._allocate(obs.shape[2])
        params, biases, out = self._passes[which]
        s, t, n = self.shape
        x = obs.numpy()
        for layer, (w, _), b, y, y_np in zip(self.plan, params, biases, out.tensors, out.arrays, strict=True):
            if layer.shared:  # one matmul per member over the rows of all its tasks
                self._matmul(x.reshape(s, t * n, -1), w.swapaxes(1, 2), y_np.reshape(s, t * n, -1))
                y.view(s, t * n, -1).add_(b)
            else:  # one matmul per (member, task), each with its own weights
                self._matmul(x, w.swapaxes(2, 3), y_np)
                y.add_(b)
            _ACTIVATE[layer.activation](y)
            x = y_np
        return out.tensors[-1]

    def backward(self, obs: torch.Tensor, grad_q: torch.Tensor, equal_feature_pull: bool = False) -> None:
        """Gradients of the loss whose derivative by the online Q values of :meth:`forward` (``which``
        ``online``, on the same ``obs``) is ``grad_q`` ``(S, T, B, A_max)``. ``equal_feature_pull``
        (``feature-norm``): each (member, task) block of the gradient at the shared features is rescaled
        by :func:`mtdqn.task_balance.feature_norm_scales` on its way down."""
        self._backward(obs, grad_q, equal_feature_pull, None)

    def task_gradient_norms(self, obs: torch.Tensor, grad_q: torch.Tensor) -> torch.Tensor:
        """``(S, T)``: the norm of each task's part of the gradient of :meth:`backward` on the trainable
        shared parameters (the ``param-norm`` measurement). Rows of different tasks never mix in the network,
        so task t's part is its own rows' product at each shared layer. ``.grad`` is left as it is."""
        sq_norms = torch.zeros(self.shape[:2])
        self._backward(obs, grad_q, False, sq_norms)
        return sq_norms.sqrt_()

    def _backward(
        self, obs: torch.Tensor, grad_q: torch.Tensor, equal_feature_pull: bool, sq_norms: torch.Tensor | None
    ) -> None:
        """The backward of :meth:`backward`; with ``sq_norms`` ``(S, T)`` instead: the squared per-task
        gradient norms on the trainable shared parameters added into it (down to the first shared layer)."""
        s, t, n = self.shape
        self.grad_h.tensors[-1].copy_(grad_q)
        first_shared = min(i for i, layer in enumerate(self.plan) if layer.role == "shared")
        for i in reversed(range(len(self.plan))):
            layer = self.plan[i]
            g, g_np = self.grad_h.tensors[i], self.grad_h.arrays[i]
            if equal_feature_pull and i == self.net.feature_layer:
                g.mul_(feature_norm_scales(g)[:, :, None, None])
            _activation_backward(g, self.h.tensors[i], layer.activation)
            x_np = self.h.arrays[i - 1] if i > 0 else obs.numpy()
            weight, bias = self.net.weights[i], self.net.biases[i]
            trainable = weight.requires_grad
            if sq_norms is not None:  # the measurement: task t's part of a shared layer's gradient
                if layer.shared and trainable:  # is the product of its own rows
                    per_task = np.empty((s, t, layer.out_dim, layer.in_dim), dtype=np.float32)
                    self._matmul(g_np.swapaxes(2, 3), x_np, per_task)
                    sq_norms += torch.from_numpy(per_task).square().sum((2, 3))
                    sq_norms += g.sum(2).square().sum(2)
                if i == first_shared:
                    return
            else:
                weight.grad = self._grads[weight] if trainable else None
                bias.grad = self._grads[bias] if trainable else None
                if trainable and layer.shared:
                    rows = g_np.reshape(s, t * n, -1)
                    self._matmul(rows.swapaxes(1, 2), x_np.reshape(s, t * n, -1), self._grad_arrays[weight])
                    torch.sum(g.view(s, t * n, -1), dim=1, keepdim=True, out=bias.grad)
                elif trainable:
                    self._matmul(g_np.swapaxes(2, 3), x_np, self._grad_arrays[weight])
                    torch.sum(g, dim=2, keepdim=True, out=bias.grad)
            if i == 0:
                break
            w_np = self.online[i][0]
            below = self.grad_h.arrays[i - 1]
            if layer.shared:
                self._matmul(g_np.reshape(s, t * n, -1), w_np, below.reshape(s, t * n, -1))
            else:
                self._matmul(g_np, w_np, below)

    def _matmul(self, a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
        """``out = a @ b`` for arrays led by the member axis (sliced over threads, see the module doc)."""
        self._slices.matmul(a, b, out)


def _numpy_params(net: MultiTaskQNetwork) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(W, b)`` of every layer as numpy views of the live float32 CPU tensors."""
    for p in net.parameters():
        if p.dtype != torch.float32 or p.device.type != "cpu":
            raise ValueError("ManualBackprop needs float32 parameters on the CPU")
    return net.numpy_params()
