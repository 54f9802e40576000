"""Every router of the service, gathered in one place."""

from fastapi import APIRouter

from service.api.routes import docs, health, models, predict

api_router = APIRouter()
api_router.include_router(health.router)
api_router.include_router(models.router)
api_router.include_router(predict.router)
api_router.include_router(docs.router)
