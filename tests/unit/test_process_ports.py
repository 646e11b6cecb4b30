"""How a process task's target ports map to host ports (agent/executors/process.py, docs/networking.md)."""

from __future__ import annotations

import socket

from agent.executors.process import assign_host_ports, port_env, task_env


def test_each_port_gets_a_distinct_free_host_port_and_host_mode_keeps_its_own() -> None:
    ports = [{"protocol": "tcp", "target_port": 8080, "published_port": 30001, "publish_mode": "ingress"},
             {"protocol": "tcp", "target_port": 9090, "published_port": 0, "publish_mode": "ingress"},
             {"protocol": "udp", "target_port": 53, "published_port": 0, "publish_mode": "ingress"},
             {"protocol": "tcp", "target_port": 7000, "published_port": 7001, "publish_mode": "host"}]
    got = assign_host_ports(ports)
    assert got["7000/tcp"] == 7001  # host mode: the published port, bound by the task itself
    assert got["8080/tcp"] != got["9090/tcp"] and got["8080/tcp"] != 30001  # ingress: the mesh owns 30001
    with socket.socket() as s:
        s.bind(("", got["8080/tcp"]))  # really free
    env = port_env(got, "127.0.0.2")
    assert env["SHOAL_PORT_8080"] == str(got["8080/tcp"]) and env["SHOAL_PORT_53_UDP"] == str(got["53/udp"])
    assert env["PORT"] == str(got["8080/tcp"]) and env["SHOAL_BIND_ADDR"] == "127.0.0.2"


def test_the_spec_env_wins_and_no_ports_means_no_port_variables() -> None:
    task = {"id": "t1", "service_name": "web", "slot": 1}
    env = task_env(task, "n1", {"PORT": "1"}, host_ports={"8080/tcp": 40000},
                   extra={"SHOAL_HOSTS_FILE": "/x/hosts"})
    assert env["PORT"] == "1" and env["SHOAL_PORT_8080"] == "40000" and env["SHOAL_HOSTS_FILE"] == "/x/hosts"
    assert "PORT" not in task_env(task, "n1", {})
