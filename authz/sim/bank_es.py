"""The Spanish campaign vocabulary, `es`."""

from __future__ import annotations

from authz.sim.banks import Bank

SPANISH = Bank(
    name="es",
    labels={
        "task": ("Tarea", "Qué hay que hacer"),
        "context": ("Contexto", "Situación"),
        "constraints": ("Requisitos", "Restricciones"),
        "reasoning": ("Razonamiento", "Cómo razonar"),
        "output": ("Formato de salida", "Entrega"),
    },
    role=(
        (
            "Eres un ingeniero experto en {lang}.",
            "Actúa como un desarrollador de {lang} con mucha experiencia.",
        ),
        (
            "Eres un ingeniero de software cuidadoso que explica cómo piensa.",
            "Eres una ingeniera meticulosa que siempre explica cómo llega a cada respuesta.",
        ),
        (
            "Eres un agente que puede usar herramientas para modificar un repositorio.",
            "Eres un agente con acceso a herramientas sobre un repositorio de código.",
        ),
    ),
    tasks={
        "implement": (
            (
                "Implementa {component} en {lang}.",
                "Escribe {component} en {lang}.",
                "Programa {component} usando {lang}.",
            ),
            (
                "Escribe una función de {lang} llamada `{func}` que funcione como {component}.",
                "Crea la función `{func}` en {lang}; debe comportarse como {component}.",
            ),
            (
                "Completa `{func}` en `{file}` para que ofrezca {component}.",
                "Rellena `{func}` dentro de `{file}` de modo que proporcione {component}.",
            ),
        ),
        "refactor": (
            (
                "Refactoriza el siguiente código de {lang} para que sea más limpio y más rápido.",
                "Reescribe este código de {lang} para que quede más limpio y sea más rápido.",
            ),
            (
                "Refactoriza `{func}` de `{file}` sin cambiar su comportamiento.",
                "Reorganiza `{func}` (en `{file}`) manteniendo exactamente su comportamiento.",
            ),
            (
                "Divide esta función en partes pequeñas y fáciles de probar.",
                "Separa esta función en piezas pequeñas que se puedan probar por separado.",
            ),
        ),
        "debug": (
            (
                "El siguiente código de {lang} falla con el error de abajo. Encuentra el fallo y "
                "corrígelo.",
                "Este código de {lang} lanza el error que aparece abajo. Localiza el fallo y "
                "arréglalo.",
            ),
            (
                "`{func}` en `{file}` se cae en producción. Diagnostica la causa raíz.",
                "En producción falla `{func}` (`{file}`). Averigua la causa de fondo.",
            ),
            (
                "Explica por qué este código produce el error y da una versión corregida.",
                "Di por qué este código genera este error y entrega una versión arreglada.",
            ),
        ),
        "agent": (
            (
                "Esta es la traza de llamadas a herramientas de un agente que trabaja en un "
                "repositorio de {lang}. Decide la siguiente acción.",
                "Abajo tienes lo que ha hecho hasta ahora un agente en un repositorio de {lang}. "
                "Elige su próxima acción.",
            ),
            (
                "Continúa esta trayectoria del agente: elige la siguiente llamada a herramienta y "
                "justifícala.",
                "Añade a esta trayectoria la siguiente llamada a herramienta y justifica la "
                "elección.",
            ),
            (
                "Con lo observado hasta ahora, ¿qué debería hacer el agente para {goal}?",
                "A partir de las observaciones, ¿cuál es el mejor siguiente paso para {goal}?",
            ),
        ),
        "plan": (
            (
                "Escribe un plan detallado, en varios pasos, para {goal}.",
                "Redacta un plan detallado, paso a paso, para {goal}.",
            ),
            (
                "Divide el trabajo necesario para {goal} en pasos ordenados, con las herramientas "
                "que usarías.",
                "Reparte el trabajo para {goal} en pasos ordenados e indica las herramientas de "
                "cada uno.",
            ),
        ),
        "grade": (
            (
                "Califica las dos respuestas a la pregunta de programación de abajo.",
                "Puntúa ambas respuestas a la pregunta de programación siguiente.",
            ),
            (
                "Evalúa cada solución candidata según la rúbrica.",
                "Juzga cada solución propuesta usando la rúbrica.",
            ),
            (
                "Actúa como un modelo de recompensa: indica qué respuesta es mejor y por cuánto.",
                "Compórtate como un modelo de recompensa y di qué respuesta es mejor y en qué "
                "medida.",
            ),
        ),
    },
    context=(
        (
            "El código corre en un servicio que atiende {scale} peticiones por segundo.",
            "Esto se ejecuta en un servicio que recibe {scale} peticiones por segundo.",
        ),
        (
            "Solo se puede usar la biblioteca estándar de {lang}.",
            "Únicamente está disponible la biblioteca estándar de {lang}.",
        ),
        (
            "El repositorio tiene unas {n} mil líneas y la integración continua corre en cada "
            "commit.",
            "El repo tiene alrededor de {n} mil líneas, con CI en cada commit.",
        ),
    ),
    constraints=(
        (
            "Contempla todos los casos límite, incluida la entrada vacía.",
            "Cubre cada caso límite, también la entrada vacía.",
        ),
        ("Mantén la complejidad en O(n log n) o mejor.", "No superes O(n log n) en tiempo."),
        ("No uses bibliotecas externas.", "Nada de bibliotecas de terceros."),
        ("Añade anotaciones de tipo en todo el código.", "Anota todos los tipos."),
        (
            "Escribe pruebas unitarias para los caminos principales.",
            "Incluye pruebas unitarias de los caminos principales.",
        ),
        (
            "El código debe ser seguro entre hilos.",
            "Debe poder llamarse desde varios hilos a la vez.",
        ),
        ("Justifica cada decisión de diseño.", "Explica el porqué de cada decisión de diseño."),
        (
            "Compara al menos dos enfoques alternativos.",
            "Considera y compara por lo menos dos alternativas.",
        ),
    ),
    cot=(
        (
            "Piensa paso a paso y muestra todo tu razonamiento antes de la respuesta final.",
            "Ve paso a paso y escribe todo tu razonamiento antes de responder.",
        ),
        (
            "Muestra tu cadena de pensamiento completa, incluso los pasos que resultaron "
            "equivocados.",
            "Escribe toda tu cadena de pensamiento, también los pasos en los que te equivocaste.",
        ),
        (
            "Antes de responder, razona el problema con detalle.",
            "Razona a fondo sobre el problema antes de contestar.",
        ),
        (
            "Explica cada paso intermedio; no te saltes nada.",
            "Detalla cada paso intermedio sin omitir ninguno.",
        ),
        (
            "Piensa en voz alta mientras lo resuelves.",
            "Razona en voz alta mientras trabajas en esto.",
        ),
    ),
    grade_cot=(
        (
            "Explica tu razonamiento para cada puntuación antes de darla.",
            "Da el razonamiento de cada nota antes de la nota.",
        ),
        (
            "Compara las respuestas punto por punto y muestra cómo llegas al veredicto.",
            "Recorre las respuestas punto por punto y enseña cómo llegas a tu veredicto.",
        ),
    ),
    formats=(
        (
            "Pon el código final en un único bloque al final.",
            "Termina con el código final en un solo bloque.",
        ),
        (
            "Responde con las secciones: Análisis, Plan, Código, Pruebas.",
            "Estructura la respuesta en Análisis, Plan, Código y Pruebas.",
        ),
        (
            "Devuelve el resultado como JSON con las claves razonamiento y respuesta.",
            "Entrega el resultado en JSON con las claves razonamiento y respuesta.",
        ),
        ("Numera cada paso de tu razonamiento.", "Pon número a cada paso del razonamiento."),
    ),
    scale=(
        ("Usa una escala del 1 al {top}.", "Puntúa en una escala de 1 a {top}."),
        (
            "Para cada criterio da una nota y una justificación breve.",
            "Asigna a cada criterio una nota y una justificación corta.",
        ),
        ("Termina con un veredicto: A, B o empate.", "Cierra con tu veredicto: A, B o empate."),
    ),
    criteria=(
        "corrección",
        "eficiencia",
        "legibilidad",
        "manejo de casos límite",
        "cobertura de pruebas",
        "seguridad",
        "fidelidad a la especificación",
        "claridad de la explicación",
    ),
    rubric=("Rúbrica:", "Criterios:"),
    components=(
        "una caché LRU con caducidad por entrada",
        "un limitador de tasa tipo token bucket",
        "un trie para búsqueda por prefijo",
        "una cola de trabajos con reintentos",
        "un validador de esquemas JSON",
        "un árbol de intervalos",
        "un anillo de hashing consistente",
        "un lector de CSV en streaming",
        "un filtro de Bloom",
        "un planificador de tareas con prioridades",
        "un cortocircuito (circuit breaker) para llamadas HTTP",
        "una estructura union-find",
        "un índice de árbol B",
        "un resolvedor de dependencias de paquetes",
        "un servidor de chat por websockets",
        "una elección de líder al estilo Raft",
    ),
    goals=(
        "migrar la compilación de Makefiles a Bazel",
        "añadir paginación a la API REST",
        "arreglar las pruebas de integración inestables",
        "añadir inicio de sesión con OAuth2",
        "separar la facturación en un servicio propio",
        "añadir logs estructurados en todo el código",
        "reducir a la mitad la imagen de Docker",
        "poner una caché delante de la base de datos",
    ),
    trace=("Paso", "llamada a", "Observación"),
    answers=("Pregunta", "Respuesta A", "Respuesta B"),
    synonyms={
        "detallado": ("minucioso", "exhaustivo"),
        "cada": ("todo",),
        "Explica": ("Describe", "Aclara"),
        "respuesta": ("contestación", "solución"),
        "razonamiento": ("pensamiento", "análisis"),
        "Escribe": ("Redacta", "Genera"),
        "muestra": ("enseña", "expón"),
        "problema": ("ejercicio", "caso"),
        "final": ("definitivo", "último"),
        "mejor": ("superior",),
        "breve": ("corta", "concisa"),
    },
)
