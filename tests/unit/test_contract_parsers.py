"""The parsers behind the contract checks, on the shapes real projects have."""

import ast
import textwrap

from pools.contracts.calls import js_calls, python_calls
from pools.contracts.check import Tree, read_routes
from pools.contracts.js_scan import tokenize
from pools.contracts.orm import orm_tables
from pools.contracts.sql_refs import python_sql_strings, references
from pools.contracts.sql_schema import read_schema


def routes_of(files: dict[str, str]) -> set[tuple[str, str]]:
    routes, _ = read_routes(Tree.parse({p: textwrap.dedent(c) for p, c in files.items()}))
    return {(r.method, r.path) for r in routes}


# ---------------------------------------------------------------- backend routes


def test_fastapi_routers_with_prefixes_across_modules():
    files = {
        "backend/app/main.py": """
            from fastapi import FastAPI
            from .routers import bookings
            from app.routers.menu import router as menu_router
            from app.routers import admin

            app = FastAPI()
            app.include_router(bookings.router, prefix="/api")
            app.include_router(menu_router, prefix="/api/v1", tags=["menu"])
            app.include_router(admin.router)

            @app.get("/health")
            def health():
                return {"ok": True}
        """,
        "backend/app/routers/__init__.py": "",
        "backend/app/routers/bookings.py": """
            from fastapi import APIRouter
            router = APIRouter(prefix="/bookings", tags=["bookings"])

            @router.get("")
            async def list_bookings(): ...

            @router.post("/", status_code=201)
            async def create_booking(): ...

            @router.api_route("/{booking_id}", methods=["PUT", "PATCH"])
            async def update_booking(booking_id: int): ...
        """,
        "backend/app/routers/menu.py": """
            from fastapi import APIRouter
            router = APIRouter()

            @router.get("/menu/{item_id}")
            def item(item_id: int): ...
        """,
        "backend/app/routers/admin.py": """
            from fastapi import APIRouter
            router = APIRouter(prefix="/admin")
            router.add_api_route("/stats", lambda: {}, methods=["GET"])
        """,
    }
    assert routes_of(files) == {
        ("GET", "/health"),
        ("GET", "/api/bookings"),
        ("POST", "/api/bookings"),
        ("PUT", "/api/bookings/{booking_id}"),
        ("PATCH", "/api/bookings/{booking_id}"),
        ("GET", "/api/v1/menu/{item_id}"),
        ("GET", "/admin/stats"),
    }


def test_a_fastapi_router_nobody_includes_serves_nothing():
    files = {
        "app/main.py": "from fastapi import FastAPI\napp = FastAPI()\n",
        "app/orphan.py": (
            "from fastapi import APIRouter\nrouter = APIRouter(prefix='/api')\n"
            "@router.get('/bookings')\ndef b(): ...\n"
        ),
    }
    routes, notes = read_routes(Tree.parse(files))
    assert routes == [] and any("never mounted" in note for note in notes)


def test_flask_blueprints_where_register_blueprint_prefix_replaces_the_blueprints_own():
    files = {
        "server/app.py": """
            from flask import Flask
            from server.views.bookings import bp as bookings_bp
            from server.views import menu

            app = Flask(__name__)
            app.register_blueprint(bookings_bp)
            app.register_blueprint(menu.blueprint, url_prefix="/api/v2/menu")

            @app.route("/")
            def index(): ...
        """,
        "server/views/__init__.py": "",
        "server/views/bookings.py": """
            from flask import Blueprint
            bp = Blueprint("bookings", __name__, url_prefix="/api/bookings")

            @bp.route("/", methods=["GET", "POST"])
            def bookings(): ...

            @bp.get("/<int:booking_id>")
            def booking(booking_id): ...

            @bp.delete("/<int:booking_id>")
            def cancel(booking_id): ...
        """,
        "server/views/menu.py": """
            from flask import Blueprint
            blueprint = Blueprint("menu", __name__, url_prefix="/ignored")

            @blueprint.route("/items")
            def items(): ...
        """,
    }
    assert routes_of(files) == {
        ("GET", "/"),
        ("GET", "/api/bookings"),
        ("POST", "/api/bookings"),
        ("GET", "/api/bookings/<int:booking_id>"),
        ("DELETE", "/api/bookings/<int:booking_id>"),
        ("GET", "/api/v2/menu/items"),
    }


def test_django_urls_with_include_and_re_path():
    files = {
        "site/urls.py": """
            from django.urls import include, path
            urlpatterns = [
                path("api/", include("bookings.urls")),
                path("health/", health),
            ]
        """,
        "bookings/urls.py": """
            from django.urls import path, re_path
            from . import views
            urlpatterns = [
                path("bookings/", views.bookings),
                path("bookings/<int:pk>/", views.booking),
                re_path(r"^menu/(?P<slug>[-\\w]+)/$", views.menu),
            ]
        """,
    }
    assert routes_of(files) == {
        ("*", "/api/bookings"),
        ("*", "/api/bookings/<int:pk>"),
        ("*", "/api/menu/{param}"),
        ("*", "/health"),
    }


def test_express_routers_mounted_from_other_files():
    files = {
        "server/index.js": """
            const express = require("express");
            const cors = require("cors");
            const bookings = require("./routes/bookings");
            import menuRouter from "./routes/menu.js";

            const app = express();
            app.use(cors());
            app.use(express.json());
            app.use("/api/bookings", bookings);
            app.use("/api/menu", menuRouter);
            app.use("/api/admin", require("./routes/admin"));
            app.get("/health", (req, res) => res.send("ok"));
            app.listen(3000);
        """,
        "server/routes/bookings.js": """
            const router = require("express").Router();
            // router.get("/commented-out", handler);
            router.get("/", async (req, res) => res.json([]));
            router.route("/:id").get(show).put(update).delete(remove);
            module.exports = router;
        """,
        "server/routes/menu.js": """
            import { Router } from "express";
            const router = Router();
            router.post(`/items`, create);
            export default router;
        """,
        "server/routes/admin.js": """
            const express = require('express');
            const router = express.Router();
            router.get('/stats', stats);
            module.exports = router;
        """,
    }
    assert routes_of(files) == {
        ("GET", "/health"),
        ("GET", "/api/bookings"),
        ("GET", "/api/bookings/:id"),
        ("PUT", "/api/bookings/:id"),
        ("DELETE", "/api/bookings/:id"),
        ("POST", "/api/menu/items"),
        ("GET", "/api/admin/stats"),
    }


def test_nextjs_api_routes_by_file():
    files = {
        "web/pages/api/bookings/index.ts": "export default function handler(req, res) {}\n",
        "web/app/api/menu/[id]/route.ts": (
            "export async function GET(req) {}\nexport const DELETE = async () => {};\n"
        ),
    }
    assert routes_of(files) == {
        ("*", "/api/bookings"),
        ("GET", "/api/menu/[id]"),
        ("DELETE", "/api/menu/[id]"),
    }


# ---------------------------------------------------------------- client calls


def test_fetch_and_axios_calls_with_template_literal_urls_and_methods():
    source = textwrap.dedent("""
        import axios from "axios";
        const API = process.env.NEXT_PUBLIC_API_URL;
        const api = axios.create({ baseURL: "/api/v1", timeout: 5000 });

        export async function load(id: number) {
          const list = await fetch(`${API}/api/bookings?date=${day}`);
          const one = await fetch(`${API}/api/bookings/${id}`, { headers: { a: "b" } });
          await fetch("/api/bookings", { method: "POST", body: JSON.stringify(form) });
          await axios.delete(`/api/bookings/${id}`);
          await axios({ url: "/api/menu", method: "put" });
          await api.get("/menu/" + id);
          await fetch(url);  // unknown: skipped
          await fetch("https://api.stripe.com/v1/charges", { method: "POST" });  // another host
          await fetch("http://localhost:8000/api/health");
          const label = "don't fetch('/api/in-a-string')";
        }
    """)
    calls = {(c.method, c.path, c.line) for c in js_calls("web/api.ts", tokenize(source))}
    assert calls == {
        ("GET", "/api/bookings", 7),
        ("GET", "/api/bookings/{}", 8),
        ("POST", "/api/bookings", 9),
        ("DELETE", "/api/bookings/{}", 10),
        ("PUT", "/api/menu", 11),
        ("GET", "/api/v1/menu/{}", 12),
        ("GET", "/api/health", 15),
    }


def test_jsx_text_with_apostrophes_does_not_derail_the_scan():
    source = "export const P = () => <p>Don't forget: it's open</p>;\nfetch('/api/menu');\n"
    [call] = js_calls("web/P.jsx", tokenize(source, jsx=True))
    assert (call.method, call.path, call.line) == ("GET", "/api/menu", 2)


def test_python_clients_httpx_and_requests():
    source = textwrap.dedent("""
        import httpx
        import requests

        BASE = "http://localhost:8000"

        def book(booking_id):
            requests.post(f"{BASE}/api/bookings", json={})
            requests.request("DELETE", BASE + f"/api/bookings/{booking_id}")
            with httpx.Client(base_url="http://127.0.0.1:8000/api") as client:
                client.get("/menu")
            session = requests.Session()
            session.patch(f"/api/bookings/{booking_id}")
            httpx.get("https://example.com/api/bookings")
    """)
    calls = {(c.method, c.path) for c in python_calls("client.py", ast.parse(source))}
    assert calls == {
        ("POST", "/api/bookings"),
        ("DELETE", "/api/bookings/{}"),
        ("GET", "/api/menu"),
        ("PATCH", "/api/bookings/{}"),
    }


# ---------------------------------------------------------------- schemas, SQL and ORM


def test_schema_in_postgres_and_sqlite_dialects_with_alter_table():
    schema = read_schema(
        {
            "db/001_init.sql": (
                "CREATE TABLE IF NOT EXISTS public.bookings (\n  id BIGSERIAL PRIMARY KEY,\n"
                "  party_size INT NOT NULL CHECK (party_size > 0),\n  notes JSONB DEFAULT '{}'::jsonb\n);\n"
                "CREATE VIEW upcoming AS SELECT * FROM bookings;\n"
            ),
            "db/002_more.sql": (
                "CREATE TABLE menu (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT) STRICT;\n"
                "ALTER TABLE bookings ADD COLUMN starts_at TIMESTAMPTZ;\n"
            ),
        }
    )
    assert set(schema.tables) == {"bookings", "upcoming", "menu"}
    bookings = schema.tables["bookings"]
    assert set(bookings.columns) == {"id", "party_size", "notes", "starts_at"}
    assert bookings.line == 1 and bookings.columns["party_size"] == 3
    assert schema.tables["upcoming"].has_column("anything")
    assert not schema.errors


def test_raw_sql_in_f_strings_percent_formatting_and_concatenation():
    source = textwrap.dedent('''
        def queries(db, q, table, bid):
            db.execute(f"SELECT b.id, b.party FROM bookings b JOIN users u ON u.id = b.user_id "
                       f"WHERE b.id = {bid}")
            db.execute("SELECT id, name FROM menu_items WHERE name LIKE '%%%s%%'" % q)
            db.execute(f"SELECT * FROM {table}")
            db.execute("""
                UPDATE bookings
                   SET party_size = ?
                 WHERE id = ?""", (1, 2))
            db.execute("INSERT INTO bookings (name, party_size) VALUES (%(name)s, %(size)s)", {})
            db.execute("SELECT " + ", ".join(cols) + " FROM orders WHERE status = ?", ("paid",))
            note = "select the table from the list"
    ''')
    refs = {
        (r.table, r.column, r.line)
        for item in python_sql_strings("app/db.py", ast.parse(source))
        for r in references(item)
    }
    assert refs == {
        ("bookings", None, 3),
        ("users", None, 3),
        ("bookings", "id", 3),
        ("bookings", "party", 3),
        ("users", "id", 3),
        ("bookings", "user_id", 3),
        ("menu_items", None, 5),
        ("menu_items", "id", 5),
        ("menu_items", "name", 5),
        ("bookings", None, 8),
        ("bookings", "party_size", 9),
        ("bookings", "id", 10),
        ("bookings", None, 11),
        ("bookings", "name", 11),
        ("bookings", "party_size", 11),
        ("orders", None, 12),
        ("orders", "status", 12),
    }


def test_sqlalchemy_declarative_models_with_mixins_and_explicit_names():
    source = textwrap.dedent("""
        from sqlalchemy import Column, ForeignKey, Integer, String, Table
        from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

        class Base(DeclarativeBase):
            pass

        class Timestamped:
            created_at: Mapped[datetime] = mapped_column(default=now)

        class Booking(Timestamped, Base):
            __tablename__ = "bookings"
            id: Mapped[int] = mapped_column(primary_key=True)
            party_size: Mapped[int]
            guest_name = Column("name", String(100))
            user_id = mapped_column(ForeignKey("users.id"))
            user: Mapped["User"] = relationship(back_populates="bookings")
            items: Mapped[list["Item"]] = relationship()

        tags = Table("booking_tags", Base.metadata, Column("booking_id", Integer), Column("tag", String))
    """)
    tables = {t.name: t for t in orm_tables("app/models.py", ast.parse(source))}
    assert set(tables) == {"bookings", "booking_tags"}
    assert set(tables["bookings"].columns) == {"created_at", "id", "party_size", "name", "user_id"}
    assert set(tables["booking_tags"].columns) == {"booking_id", "tag"}


def test_django_models_with_foreign_keys_db_table_and_abstract_bases():
    source = textwrap.dedent("""
        from django.db import models

        class Stamped(models.Model):
            created = models.DateTimeField(auto_now_add=True)
            class Meta:
                abstract = True

        class Booking(Stamped):
            restaurant = models.ForeignKey("Restaurant", on_delete=models.CASCADE)
            party_size = models.PositiveIntegerField()
            guest = models.CharField(max_length=100, db_column="guest_name")
            tags = models.ManyToManyField("Tag")

        class Restaurant(models.Model):
            code = models.CharField(max_length=8, primary_key=True)
            class Meta:
                db_table = "restaurants"
    """)
    tables = {t.name: t for t in orm_tables("bookings/models.py", ast.parse(source))}
    assert set(tables) == {"bookings_booking", "restaurants"}
    assert set(tables["bookings_booking"].columns) == {
        "id",
        "created",
        "restaurant_id",
        "party_size",
        "guest_name",
    }
    assert set(tables["restaurants"].columns) == {"code"}
