"""Recipes that make small, really trained models from data a package ships."""
