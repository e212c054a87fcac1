"""npconvnet ... --threads N: the layers' threads for one command."""

import npconvnet
from npconvnet import cli, parallel, zoo


def test_threads_hold_for_the_command_and_are_given_back(monkeypatch, capsys):
    seen = []
    monkeypatch.setattr(zoo, "get", lambda *args, **kwargs: seen.append(parallel.get_num_threads()) or
                        npconvnet.Sequential(npconvnet.layers.Flatten()))
    before = parallel.get_num_threads()
    cli.main(["summary", "--model", "tiny", "--threads", "3"])
    assert seen == [3] and parallel.get_num_threads() == before


def test_threads_must_be_a_positive_integer(capsys):
    assert cli.main(["summary", "--model", "tiny", "--threads", "0"]) == 2
    assert "--threads" in capsys.readouterr().err
