"""The HTTP apps: the data-plane routes (framework-free tables, served by ``direct``), the admin
routers (FastAPI), auth, and errors rendered in one place."""
