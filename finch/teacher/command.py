"""`finch teacher`: the teacher simulator as a command (``finch.teacher.server``)."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, envvar="FINCH_TEACHER_HOST", show_envvar=True)
@click.option("--port", default=8788, show_default=True, type=int, envvar="FINCH_TEACHER_PORT", show_envvar=True)
@click.option(
    "--data",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    envvar="FINCH_TEACHER_DATA",
    help='JSONL of {"question", "answer"}. Default: the chatterbot-corpus English set.',
)
@click.option("--first-token-delay", default=0.0, show_default=True, help="Seconds before the first token.")
@click.option("--token-delay", default=0.0, show_default=True, help="Seconds between streamed tokens.")
@click.option("--reword/--no-reword", default=False, show_default=True, help="Vary answers' wording.")
@click.option(
    "--fault",
    multiple=True,
    metavar="KIND=RATE",
    help="Random fault rate, e.g. --fault 429=0.05. Kinds: 400 401 429 500 503 529 hang drop.",
)
@click.option("--no-auth", is_flag=True, help="Accept requests without an API key.")
@click.option("--seed", default=0, show_default=True)
def teacher(
    host: str,
    port: int,
    data: Path | None,
    first_token_delay: float,
    token_delay: float,
    reword: bool,
    fault: tuple[str, ...],
    no_auth: bool,
    seed: int,
) -> None:
    """Run the teacher simulator: a Messages API server answering from a question/answer set."""
    from finch.server.runner import serve_forever
    from finch.teacher.corpus import load_default, load_jsonl
    from finch.teacher.server import Teacher, TeacherConfig, build_teacher_app

    rates = {}
    for item in fault:
        kind, _, rate = item.partition("=")
        try:
            rates[kind] = float(rate)
        except ValueError as exc:
            raise click.BadParameter(f"{item!r} is not KIND=RATE", param_hint="--fault") from exc
    corpus = load_jsonl(data) if data else load_default()
    config = TeacherConfig(
        first_token_delay=first_token_delay,
        token_delay=token_delay,
        reword=reword,
        require_auth=not no_auth,
        rates=rates,
        seed=seed,
    )
    click.echo(f"teacher on http://{host}:{port} with {len(corpus)} questions")
    serve_forever(build_teacher_app(Teacher(corpus, config)), host, port, "warning")
