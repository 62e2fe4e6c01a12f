"""The semantic editor: a local web page to correct the model's semantic map and see the colors follow.

``server`` holds the HTTP API and the state; ``static/`` the page (plain HTML, CSS and JavaScript, no build
step), shipped as package data.
"""
