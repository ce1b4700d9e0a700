"""The text of a tiny recipe (a 5 k-parameter ResNet, one epoch unless told), for the tests that write recipe files."""

_TEMPLATE = """\
name: {name}
source: a tiny recipe for tests
model:
  - remove_stage: {{index: 3}}
  - scale_width: {{factor: {width}}}
  - redistribute_blocks: {{blocks: [1, 1, 1]}}
train: {{epochs: {epochs}, batch_size: 16, amp: none, channels_last: false{train}}}
claims: {{params: {params}, accuracy: {accuracy}, accuracy_basis: made up}}
{extra}"""


def tiny_recipe(name: str, *, width: str = "0.0625", epochs: int = 1, train: str = "", params: str = "1",
                accuracy: str = "50.0", extra: str = "") -> str:
    """YAML of recipe ``name``. ``train`` adds keys inside ``train: {...}`` (e.g. ``", seed: 1"``);
    ``extra`` adds top-level sections after the claims (e.g. ``"fast: {epochs: 2}\\n"``)."""
    return _TEMPLATE.format(name=name, width=width, epochs=epochs, train=train, params=params, accuracy=accuracy,
                            extra=extra)
