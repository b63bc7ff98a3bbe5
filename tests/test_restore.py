"""`graphprune restore` refuses clearly: outside a repository, and when a dvc/snakemake step fails."""

from graphprune.cli import main


def test_restore_outside_a_repository_says_where_to_run_it(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["restore"]) == 2
    assert "has no dvc.yaml" in capsys.readouterr().err


def test_a_failing_dvc_step_is_reported_with_its_command_and_stderr(tmp_path, monkeypatch, capsys):
    # dvc.yaml and Snakefile exist, but the folder is no DVC repository: `dvc pull` fails.
    for name in ("dvc.yaml", "Snakefile"):
        (tmp_path / name).write_text("")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DVC_NO_ANALYTICS", "1")
    assert main(["restore", "--remote", "nowhere"]) == 2
    err = capsys.readouterr().err
    assert "pull --remote nowhere` failed with exit status" in err
    assert "not inside of a DVC repository" in err
    assert "What to do:" in err
