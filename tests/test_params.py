import pytest

from dragkit import ParameterError, get_method
from dragkit.core.params import REGISTRY, lookup, parse_assignment


def test_set_parses_and_validates_by_type():
    assert parse_assignment("r_p=6") == ("r_p", 6)
    assert parse_assignment("latent_lr=1e-3") == ("latent_lr", 0.001)
    assert parse_assignment(" tracker = nearest ") == ("tracker", "nearest")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("r_p=6.5", "expected an integer"),
        ("drag_steps=-1", "must be ≥ 0"),
        ("latent_lr=nan", "finite"),
        ("latent_lr=inf", "finite"),
        ("latent_lr=0", "must be > 0"),
        ("tracker=magic", "choose one of"),
        ("r_q=3", "unknown parameter 'r_q' (did you mean r_p"),
        ("r_p", "expected NAME=VALUE"),
        ("=3", "expected NAME=VALUE"),
    ],
)
def test_bad_assignments_name_the_value(text, message):
    with pytest.raises(ParameterError, match=message.replace("(", r"\(").replace("≥", "≥")):
        parse_assignment(text)


def test_method_resolution_layers_defaults_and_overrides():
    m = get_method("draggan")
    p = m.resolve()
    assert p["tracker"] == "nearest" and p["patch_shape"] == "disc" and p["lam"] == 10.0
    assert m.resolve({"r_p": 9})["r_p"] == 9
    assert m.resolve({"r_p": "9"})["r_p"] == 9
    with pytest.raises(ParameterError, match="unknown method 'dragan' \\(did you mean draggan"):
        get_method("dragan")


def test_every_parameter_documents_itself():
    for name, p in REGISTRY.items():
        assert p.help and p.owner, name
        assert lookup(name) is p
        p.validate(p.default)


def test_help_params_lists_every_name():
    from dragkit.interfaces.cli import params_table

    table = params_table()
    for name in REGISTRY:
        assert name in table
