from genstudio.cli import app

app(prog_name="genstudio")
