from django.http import HttpResponse, JsonResponse, StreamingHttpResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt


def index(request):
    return HttpResponse("django says hi")


@csrf_exempt
def echo(request):
    return JsonResponse({
        "method": request.method,
        "path": request.path,
        "get": request.GET.dict(),
        "post": request.POST.dict(),
        "body_length": len(request.body),
        "secure": request.is_secure(),
        "remote_addr": request.META.get("REMOTE_ADDR"),
    })


def stream(request):
    return StreamingHttpResponse(f"line {i}\n" for i in range(5))


urlpatterns = [path("", index), path("echo", echo), path("stream", stream)]
