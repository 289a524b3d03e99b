"""A real Flask application."""

from flask import Flask, jsonify, request

app = Flask(__name__)


@app.route("/")
def index():
    return "flask says hi"


@app.route("/json", methods=["GET", "POST"])
def data():
    return jsonify(method=request.method, args=request.args, form=request.form,
                   remote_addr=request.remote_addr, scheme=request.scheme, length=len(request.get_data()))
