def check_parameter(name, value, kind, ok, expected):
    """Stop at once, with a clear message, if a parameter is wrong."""
    if (isinstance(value, bool) and kind is not bool
            or not isinstance(value, kind)):
        raise TypeError(f"parameter {name} must be {expected}, got "
                        f"{value!r} of type {type(value).__name__}")
    if not ok(value):
        raise ValueError(f"parameter {name} must be {expected}, "
                         f"got {value!r}")


def check_device(device):
    check_parameter("device", device, str,
                    lambda v: v in ("cpu", "cuda", "mps")
                    or v.startswith("cuda:"),
                    '"cpu", "cuda", "cuda:N" or "mps"')
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(
            f"device={device!r} but PyTorch sees no GPU. On Colab choose "
            "Runtime > Change runtime type > GPU; elsewhere use 'cpu'.")
    if device == "mps" and not torch.backends.mps.is_available():
        raise ValueError("device='mps' but PyTorch sees no Apple GPU; "
                         "use device='cpu'.")
