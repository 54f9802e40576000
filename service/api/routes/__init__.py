"""Every route of the service, gathered in one place."""

from fastapi import APIRouter

from service.api.body_routes import BodyRoute
from service.api.routes import docs, health, models, predict, sessions, stream, v2

api_router = APIRouter()
api_router.include_router(health.router)
api_router.include_router(models.router)
api_router.include_router(sessions.router)
api_router.include_router(stream.router)
api_router.include_router(docs.router)
api_router.include_router(v2.router)  # the Open Inference Protocol (KServe v2)

# Routes with a JSON body: declared once, answered by the front door (api/body_routes.py).
BODY_ROUTES: list[BodyRoute] = [*predict.ROUTES, *sessions.ROUTES, *v2.ROUTES]
