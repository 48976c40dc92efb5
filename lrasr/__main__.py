from lrasr.cli import app

app(prog_name="lrasr")
