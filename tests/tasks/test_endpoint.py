"""EndpointResponseTask's settings: an endpoint is MODEL@URL, and such a model is tested, never fitted
(what it answers is checked end to end in tests/test_serving.py)."""

import pytest

from kokorozoo.cli import main
from kokorozoo.errors import UsageError
from kokorozoo.tasks.endpoint import EndpointResponseTask


def test_an_endpoint_is_model_at_url():
    with pytest.raises(UsageError, match=r"model.init_args.endpoint: expected MODEL@URL"):
        EndpointResponseTask(endpoint="gpt-4o")
    task = EndpointResponseTask(endpoint="gpt-4o@https://api.openai.com/v1", max_new_tokens=64)
    assert task.endpoint.max_tokens == 64 and task.endpoint.temperature == 0.0 and task.remote


def test_a_model_behind_an_endpoint_cannot_be_fitted(short_fit_args, tmp_path, capsys):
    args = short_fit_args("response.yaml", tmp_path, "--model=EndpointResponseTask")
    args.append("--model.init_args.endpoint=m@http://127.0.0.1:9/v1")
    assert main(args) == 2
    assert "kokorozoo can test it, not fit it" in capsys.readouterr().err
