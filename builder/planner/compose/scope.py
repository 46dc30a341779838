"""Requests the meaning language cannot express, and requests in other languages (abstention data).

Written for this parser (not taken from any evaluation set). ``out_of_scope(split)`` gives English
sentences that ask for other tasks, facts not in the image or attributes the shapes engines do
not know; ``foreign(split)`` gives requests in other languages. Every fourth sentence of each
list is held out (``split="heldout"``) to measure refusal on sentences the scope head never saw.
"""

from __future__ import annotations

OUT_OF_SCOPE = (
    "Email this picture to my manager.", "What is our stock price today?", "Is the worker wearing gloves?",
    "Book a meeting room for Friday afternoon.", "Translate the invoice into German.",
    "What will the weather be like tomorrow in Paris?", "Order twenty more pallets from the supplier.",
    "How much does the red truck cost?", "Who painted this picture?", "Is the customer happy with the delivery?",
    "Write a poem about circles.", "Delete all the files in the shared folder.", "What time is it in Tokyo?",
    "Summarise the quarterly sales report.", "Is the driver drunk?", "How old is the man in the photo?",
    "What is the capital of Australia?", "Send an SMS to the night shift.", "Play some relaxing music.",
    "Is the milk past its expiry date?", "How fast is the car going?", "What brand is the laptop?",
    "Reset my password please.", "Print the report twice.", "Is the painting worth more than a thousand dollars?",
    "Which employee placed this box here yesterday?", "What does the CEO think about the new logo?",
    "Calculate the VAT on this invoice.", "Is this person allowed into the building?",
    "What is the temperature of the oven?", "Does the food taste good?", "Is the engine running?",
    "Schedule maintenance for the conveyor next week.", "Who won the football match last night?",
    "What is the meaning of life?", "Upload the photo to our website.", "Is the water in the glass cold?",
    "What emotion does the dog feel?", "Compress these images into a zip file.",
    "How many calories are in the sandwich?", "Is the bridge safe to cross?", "What is the Wi-Fi password?",
    "Tell me a joke about triangles.", "Which supplier makes the cheapest bolts?",
    "What was the revenue of the company in 2019?", "Is the patient's fever getting worse?",
    "How heavy is the crate?", "Is the door locked?", "Call the fire department.", "Is the star made of metal?",
    "Will it rain on the parking lot this evening?", "Rename the image to final_version.png.",
    "What is the square root of two?", "How far is the warehouse from the airport?",
    "Is the circle smiling?", "Who is the owner of the blue car?", "Is the fruit ripe enough to eat?",
    "What year was this photo taken?", "Make the picture black and white.", "Increase the brightness by 20 percent.",
    "Is the package insured?", "What smell is coming from the box?", "Which of my colleagues is on holiday?",
    "How loud is the machine?", "Is the glass half full or half empty philosophically?",
    "Draw me a unicorn.", "What's the exchange rate between euros and dollars?", "Is the red square expensive?",
    "Cancel my subscription.", "What is the battery level of the camera?", "Is the triangle angry?",
    "How long will the delivery take?", "Who is the author of this document?", "Does the hexagon feel soft?",
    "What material is the pipe made of?", "Is the worker certified to drive a forklift?",
    "Predict next month's sales.", "Open the garage door.", "Which song is playing in the background?",
    "What is the phone number of the supplier?", "Is the circle hot or cold?", "Write the minutes of the meeting.",
    "How many days until Christmas?", "Is the bolt tightened to the right torque?", "What did the customer say?",
    "Log me out of the system.", "Is this website secure?", "What does the blue star weigh?",
    "How much money is in the account?", "Is the picture copyrighted?", "Find me a cheap flight to Rome.",
    "Are the employees satisfied with their salaries?", "What is the population of Canada?",
    "Buy a new camera for the inspection line.", "Is the square legally registered?",
    "What language does the driver speak?", "Check my calendar for tomorrow.", "Is the triangle's owner at home?",
    "Restart the server in the basement.", "Is the customer's credit card valid?",
    "Recommend a good restaurant nearby.", "What is the voltage of the battery?", "Is the star lucky?",
    "Sort my emails by date.", "Who will win the election?", "How much tax do we owe this year?",
)

FOREIGN = (
    "¿Cuántos círculos rojos hay en la imagen?", "Combien de carrés bleus y a-t-il sur l'image ?",
    "Wie viele rote Kreise sind im Bild?", "Quanti triangoli verdi ci sono nella foto?",
    "Quantos quadrados azuis existem na imagem?", "Hoeveel rode cirkels staan er op de foto?",
    "图片里有几个红色的圆？", "Сколько красных кругов на картинке?", "画像に赤い丸はいくつありますか？",
    "¿De qué color es la estrella grande?", "De quelle couleur est le grand hexagone ?",
    "Welche Farbe hat das kleine Dreieck?", "Di che colore è la stella piccola?", "Qual é a cor do círculo?",
    "Is er een blauwe ster links van het vierkant?", "Hay una estrella azul a la izquierda del cuadrado?",
    "Y a-t-il une étoile jaune au-dessus du cercle ?", "Gibt es einen gelben Stern über dem Kreis?",
    "C'è un esagono viola sotto il quadrato?", "Existe um triângulo vermelho à direita da estrela?",
    "Cuenta los cuadrados verdes.", "Compte les étoiles rouges.", "Zähle die blauen Sechsecke.",
    "Conta i cerchi gialli.", "Conte os triângulos roxos.", "Tel de groene sterren.",
    "Encuentra el círculo más grande.", "Trouve le plus petit triangle.", "Finde den größten Stern.",
    "Trova il quadrato più a sinistra.", "Encontre o hexágono mais alto.", "Zoek de kleinste cirkel.",
    "Kolik je na obrázku červených kruhů?", "Ile niebieskich kwadratów jest na zdjęciu?",
    "Resimde kaç tane kırmızı daire var?", "Hány piros kör van a képen?", "Πόσοι κόκκινοι κύκλοι υπάρχουν;",
    "그림에 빨간 원이 몇 개 있나요?", "كم عدد الدوائر الحمراء في الصورة؟", "Hur många röda cirklar finns det på bilden?",
)


def _split(items: tuple[str, ...], split: str) -> list[str]:
    if split not in ("train", "heldout", "all"):
        raise ValueError(f"unknown split {split!r}; use train, heldout or all")
    return [s for i, s in enumerate(items) if split == "all" or (i % 4 == 3) == (split == "heldout")]


def out_of_scope(split: str = "train") -> list[str]:
    """English requests the language cannot express (``split``: train, heldout or all)."""
    return _split(OUT_OF_SCOPE, split)


def foreign(split: str = "train") -> list[str]:
    """Requests in languages other than English (``split``: train, heldout or all)."""
    return _split(FOREIGN, split)
