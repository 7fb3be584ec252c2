"""What each command does, below the command line: functions that take a project and
return typed results, usable from Python; :mod:`hubpin.cli` only parses and renders.
"""
