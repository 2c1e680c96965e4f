#!/usr/bin/python3
"""A stand-in for systemd-logind on a private bus (org.freedesktop.login1(5)): the Manager's
Inhibit method (it hands out one end of a pipe and notes when the holder closes it) and
the PrepareForShutdown signal, sent on SIGUSR1 (true: going down) and SIGUSR2 (false: the
shutdown was cancelled). Writes what happens to LOG, one line each.

usage: fake-logind.py BUS_ADDRESS LOG
"""
import os
import signal
import sys
import time

import dbus
import dbus.mainloop.glib
import dbus.service
from gi.repository import GLib

ADDRESS, LOG = sys.argv[1], sys.argv[2]
IFACE = "org.freedesktop.login1.Manager"


def note(line):
    with open(LOG, "a") as f:
        f.write("%.3f %s\n" % (time.time(), line))


class Manager(dbus.service.Object):
    @dbus.service.method(IFACE, in_signature="ssss", out_signature="h")
    def Inhibit(self, what, who, why, mode):
        r, w = os.pipe()
        fd = dbus.types.UnixFd(w)  # a copy of w goes to the caller
        os.close(w)
        note("inhibit %s %s %s" % (what, who, mode))

        def closed(source, condition):
            if condition & GLib.IO_IN and os.read(source, 1):
                return True
            note("released")
            os.close(source)
            return False

        GLib.io_add_watch(r, GLib.IO_IN | GLib.IO_HUP, closed)
        return fd

    @dbus.service.signal(IFACE, signature="b")
    def PrepareForShutdown(self, active):
        note("PrepareForShutdown %s" % bool(active))


dbus.mainloop.glib.DBusGMainLoop(set_as_default=True)
bus = dbus.bus.BusConnection(ADDRESS)
name = dbus.service.BusName("org.freedesktop.login1", bus)
manager = Manager(bus, "/org/freedesktop/login1")
GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGUSR1, lambda: manager.PrepareForShutdown(True) or True)
GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGUSR2, lambda: manager.PrepareForShutdown(False) or True)
note("ready")
GLib.MainLoop().run()
